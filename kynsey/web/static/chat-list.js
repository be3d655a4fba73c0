// The conversations at the side: links (so reload and history work), each with
// Rename (in place: Enter saves, Escape cancels) and Delete; while searching, a
// snippet says where the words were found.

import { el, icon } from "./dom.js";

// handlers: onDelete(conversation), onRename(conversation, title) -> Promise<boolean> (saved?)
export function renderConversationList(list, conversations, { currentId, query, onDelete, onRename }) {
  if (!conversations.length) {
    const text = query ? `No conversation mentions “${query}”.` : "No conversations yet.";
    list.replaceChildren(el("li", { class: "conv-empty", role: "status" }, text));
    return;
  }
  list.replaceChildren(...conversations.map((c) => {
    const title = c.title || "Untitled";
    const item = el("li", { class: "conv", "data-id": c.id });
    const link = el("a", { class: "conv-open", "data-role": "open", href: `#c=${encodeURIComponent(c.id)}`, "aria-current": c.id === currentId ? "page" : null },
      el("span", { class: "conv-name" }, title),
      c.snippet ? el("span", { class: "conv-snippet" }, c.snippet) : null);
    const rename = el("button", { type: "button", class: "conv-action conv-rename", "data-role": "rename", title: "Rename", "aria-label": `Rename “${title}”`,
      onclick: () => startRename(item, link, rename, c, onRename) }, icon("edit"));
    item.append(link, rename,
      el("button", { type: "button", class: "conv-action conv-delete", "data-role": "delete", title: "Delete", "aria-label": `Delete “${title}”`, onclick: () => onDelete(c) }, "×"));
    return item;
  }));
}

function startRename(item, link, button, conversation, onRename) {
  const input = el("input", { class: "conv-title-input", "aria-label": `New title for “${conversation.title || "Untitled"}”`, maxlength: 200 });
  input.value = conversation.title;
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    const changed = save && title && title !== conversation.title;
    if (changed && !(await onRename(conversation, title))) {
      finished = false; // not saved: the error is shown; the box stays so nothing typed is lost
      input.focus();
      return;
    }
    if (changed) {
      link.querySelector(".conv-name").textContent = title;
      button.setAttribute("aria-label", `Rename “${title}”`);
    }
    input.replaceWith(link);
    button.hidden = false;
    if (item.contains(document.activeElement) || document.activeElement === document.body) button.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault(); // Escape cancels the rename; it does not close the drawer or stop a reply
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  link.replaceWith(input);
  button.hidden = true;
  input.focus();
  input.select();
}

export function conversationFromHash() {
  const match = /^#c=([^&]+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}
