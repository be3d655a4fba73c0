// Markdown to safe HTML: marked parses, DOMPurify cleans (both vendored, loaded
// as classic scripts before the page's modules).

const { marked, DOMPurify } = window;

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(target, text) {
  target.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true, async: false }));
  for (const pre of target.querySelectorAll("pre")) labelCode(pre);
}

// A code block gets its language as a label, and can be scrolled from the keyboard.
function labelCode(pre) {
  pre.tabIndex = 0;
  const code = pre.querySelector("code");
  const lang = [...(code?.classList || [])].find((c) => c.startsWith("language-"));
  pre.setAttribute("aria-label", lang ? `${lang.slice(9)} code` : "code");
  if (lang) pre.dataset.lang = lang.slice(9);
}
