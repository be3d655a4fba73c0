// The conversations at the side: links (so reload and history work) with a delete button each.

import { el } from "./dom.js";

export function renderConversationList(list, conversations, currentId, onDelete) {
  if (!conversations.length) {
    list.replaceChildren(el("li", { class: "conv-empty" }, "No conversations yet."));
    return;
  }
  list.replaceChildren(...conversations.map((c) => {
    const title = c.title || "Untitled";
    return el("li", { class: "conv" },
      el("a", { class: "conv-open", href: `#c=${encodeURIComponent(c.id)}`, "aria-current": c.id === currentId ? "page" : null }, title),
      el("button", { type: "button", class: "conv-delete", title: "Delete", "aria-label": `Delete “${title}”`, onclick: () => onDelete(c) }, "×"),
    );
  }));
}

export function conversationFromHash() {
  const match = /^#c=([^&]+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}
