// Edit one of your messages in place: its text becomes a box with Send and Cancel.
// Sending makes a new version of the message (the old one stays, behind < 1/2 >)
// and a new reply to it. Enter sends, Shift+Enter adds a line, Escape cancels.

import { el } from "./dom.js";

// ``text`` starts in the box; onSend(text) or onCancel() is called once, then the caller repaints.
export function openEditor(node, text, { onSend, onCancel }) {
  const body = node.querySelector(".msg-body");
  const box = el("textarea", { class: "edit-input", "aria-label": "Edit your message", rows: 3 });
  box.value = text;
  const done = (send) => {
    node.classList.remove("is-editing");
    node.querySelector(".msg-actions").hidden = false;
    if (send) onSend(box.value);
    else onCancel();
  };
  const form = el("form", { class: "edit-form" }, box,
    el("div", { class: "edit-actions" },
      el("button", { type: "button", class: "quiet", onclick: () => done(false) }, "Cancel"),
      el("button", { type: "submit", class: "primary" }, "Send")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (box.value.trim()) done(true);
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault(); // Escape here cancels the edit; it does not stop a reply
      event.stopPropagation();
      done(false);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  node.classList.add("is-editing");
  node.querySelector(".msg-actions").hidden = true;
  body.replaceChildren(form);
  box.rows = Math.min(12, Math.max(3, text.split("\n").length + 1));
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}
