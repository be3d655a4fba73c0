// Copy text to the clipboard, and buttons that do it and say so.

import { announce, el, icon } from "./dom.js";

const SAID_MS = 2000;

// The async Clipboard API needs a secure context (https or localhost); a page
// served over plain http on a LAN address falls back to a selected textarea.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const focused = document.activeElement;
  const proxy = el("textarea", { class: "clipboard-proxy", readonly: true, "aria-hidden": "true", tabindex: "-1" });
  proxy.value = text;
  document.body.append(proxy);
  proxy.select();
  const copied = document.execCommand("copy");
  proxy.remove();
  focused?.focus?.();
  if (!copied) throw new Error("the browser refused to copy");
}

// A button "Copy" that copies ``text()`` and shows "Copied" (or why not) for a moment.
// ``label`` names what it copies for screen readers, e.g. "Copy message as Markdown".
export function copyButton(label, text, className = "copy-button") {
  const words = el("span", { class: "copy-words" }, "Copy");
  const button = el("button", { type: "button", class: className, "aria-label": label, title: label }, icon("copy"), words);
  let timer = 0;
  button.addEventListener("click", async () => {
    clearTimeout(timer);
    try {
      await copyText(text());
      words.textContent = "Copied";
      announce("Copied to the clipboard.");
    } catch (err) {
      words.textContent = "Copy failed";
      announce(`Could not copy: ${err.message}.`);
    }
    button.dataset.copied = "true";
    timer = setTimeout(() => { words.textContent = "Copy"; delete button.dataset.copied; }, SAID_MS);
  });
  return button;
}
