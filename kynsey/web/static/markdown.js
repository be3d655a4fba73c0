// Model output to safe HTML. marked parses the Markdown (raw HTML in it is shown
// as text, never rendered); DOMPurify then keeps only a strict allowlist of
// tags and attributes, so a reply cannot restyle, cover or overlay the page, ask
// for a password, or load anything (no style, form, input, button, iframe or
// image). Code blocks get highlight.js colours and a Copy button. All three
// libraries are vendored (vendor/README.md) and loaded as classic scripts.

import { el } from "./dom.js";
import { copyButton } from "./copy.js";

const { marked, DOMPurify, hljs } = window;

const SAFE = {
  ALLOWED_TAGS: [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "del", "s", "sup", "sub",
    "kbd", "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "align", "start"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};
// Which element may keep which attribute, and what it may say.
const ATTRIBUTE_RULES = {
  class: (tag, value) => tag === "CODE" && /^language-[\w.+#-]{1,40}$/.test(value),
  align: (tag, value) => (tag === "TH" || tag === "TD") && /^(left|right|center)$/.test(value),
  start: (tag, value) => tag === "OL" && /^\d{1,9}$/.test(value),
  href: (tag, value) => tag === "A" && /^(https?:|mailto:)/i.test(value), // a link is followed, never loaded
  title: (tag) => tag === "A",
};
// Auto-detected (unlabelled, finished) code blocks are tried against these only.
const GUESSES = ["python", "javascript", "typescript", "bash", "shell", "json", "sql", "java", "c", "cpp", "csharp",
  "go", "rust", "ruby", "php", "xml", "css", "yaml", "ini", "diff", "kotlin", "swift"];

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

marked.use({
  gfm: true,
  renderer: {
    html: ({ text }) => escapeHtml(text), // a reply's raw HTML is shown, not run
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(`[image: ${text || href}]`)}</a>`,
    checkbox: ({ checked }) => (checked ? "☑ " : "☐ "),
  },
});

DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  const rule = ATTRIBUTE_RULES[data.attrName];
  if (!rule || !rule(node.tagName, data.attrValue)) data.keepAttr = false;
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function sanitize(html) {
  return DOMPurify.sanitize(html, SAFE);
}

// ``streaming``: the text is still growing; unlabelled code is not guessed at until it is done.
export function renderMarkdown(target, text, { streaming = false } = {}) {
  target.innerHTML = sanitize(marked.parse(text, { async: false }));
  for (const pre of target.querySelectorAll("pre")) decorateCode(pre, streaming);
}

// A code block: colours, a head with its language and a Copy button; scrollable from the keyboard.
function decorateCode(pre, streaming) {
  const code = pre.querySelector("code");
  if (!code) return;
  const lang = highlight(code, streaming);
  pre.tabIndex = 0;
  pre.setAttribute("aria-label", lang ? `${lang} code` : "code");
  const box = el("div", { class: "code-block" });
  pre.replaceWith(box);
  box.append(
    el("div", { class: "code-head" },
      el("span", { class: "code-lang" }, lang || "code"),
      copyButton(lang ? `Copy the ${lang} code` : "Copy the code", () => code.textContent, "copy-button code-copy")),
    pre,
  );
}

// Colour ``code`` in place (highlight.js escapes the text it wraps); returns the language.
function highlight(code, streaming) {
  const named = [...code.classList].find((c) => c.startsWith("language-"))?.slice(9) || null;
  if (!hljs) return named;
  if (named && hljs.getLanguage(named)) {
    hljs.highlightElement(code);
    return named;
  }
  if (named || streaming) return named;
  const guess = hljs.highlightAuto(code.textContent, GUESSES);
  if (guess.language && guess.relevance >= 5) {
    code.innerHTML = guess.value;
    code.classList.add("hljs", `language-${guess.language}`);
    return guess.language;
  }
  return null;
}
