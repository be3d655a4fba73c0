// Build DOM nodes without innerHTML: el("p", {class: "note"}, "text", child).
// Attributes set to null, undefined or false are left out; true sets an empty attribute.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...present(children));
  return node;
}

// Replace a node's children, skipping null, undefined and false.
export function fill(node, ...children) {
  node.replaceChildren(...present(children));
  return node;
}

const present = (children) => children.flat().filter((c) => c !== null && c !== undefined && c !== false);

// An inline SVG icon, hidden from screen readers (the text next to it says the same).
export function icon(name) {
  const paths = {
    lock: "M6 10V7a6 6 0 1 1 12 0v3h1a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V11a1 1 0 0 1 1-1h1Zm2 0h8V7a4 4 0 1 0-8 0v3Z",
    check: "M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4L9 16.2Z",
    alert: "M1 21h22L12 2 1 21Zm12-3h-2v-2h2v2Zm0-4h-2v-4h2v4Z",
  };
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon", `icon-${name}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", paths[name]);
  svg.append(path);
  return svg;
}

export function show(node, visible) {
  node.hidden = !visible;
}

// Show ``text`` in ``node`` (hidden when empty); when ``until`` (ms since the
// epoch) passes and the text is still the same, take it away again.
export function clearAfter(node, text, until = null) {
  node.textContent = text;
  show(node, Boolean(text));
  if (text && until) {
    setTimeout(() => { if (node.textContent === text) show(node, false); }, Math.max(0, until - Date.now()));
  }
}

// Say something to screen-reader users through a polite live region.
export function announce(text) {
  const region = document.getElementById("status");
  if (!region) return;
  region.textContent = "";
  // A fresh text node after clearing makes repeated messages announce again.
  requestAnimationFrame(() => { region.textContent = text; });
}
