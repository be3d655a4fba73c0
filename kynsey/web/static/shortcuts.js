// Keyboard shortcuts, and the "?" dialog that lists them. Letter shortcuts use
// Alt (Option on a Mac) so they also work while typing in the message box;
// "/" and "?" only act when focus is not in a text field. Escape stops a reply
// being written, unless something open takes it first (a dialog, the tier
// picker, the drawer, an edit or rename box, the tier menu: each calls preventDefault).

import { el } from "./dom.js";

const MAC = /Mac|iPhone|iPad/.test(navigator.platform);
const ALT = MAC ? "Option" : "Alt";

const typing = (event) => event.target.closest?.("input, textarea, select, [contenteditable]") != null;
// event.code, not event.key: Option+N types "˜" on a Mac.
const alt = (code) => (event) => event.altKey && !event.ctrlKey && !event.metaKey && !event.shiftKey && event.code === code;

// actions: { newChat, focusComposer, tierPicker, stop, search } run a shortcut; canStop() says
// whether a reply is being written in the conversation shown (only then is Escape "stop").
export function initShortcuts({ dialog, table, helpButton, actions }) {
  const plainEscape = (e) => e.key === "Escape" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey;
  const shortcuts = [
    { keys: [[ALT, "N"]], what: "Start a new chat", test: alt("KeyN"), run: actions.newChat },
    { keys: [["Esc"]], what: "Stop the reply being written", test: (e) => plainEscape(e) && actions.canStop(), run: actions.stop },
    { keys: [[ALT, "K"]], what: "Search conversations", test: alt("KeyK"), run: actions.search },
    {
      keys: [["Shift", "Esc"], ["/"]],
      what: "Go to the message box",
      test: (e) => (e.key === "Escape" && e.shiftKey) || (e.key === "/" && !typing(e)),
      run: actions.focusComposer,
    },
    { keys: [[ALT, "T"]], what: "Open the tier picker", test: alt("KeyT"), run: actions.tierPicker },
    { keys: [["?"]], what: "Show these shortcuts", test: (e) => e.key === "?" && !typing(e), run: () => openHelp() },
  ];
  let returnFocus = null;

  function openHelp() {
    if (dialog.open) return;
    returnFocus = document.activeElement;
    dialog.showModal();
  }

  table.replaceChildren(
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Action"), el("th", { scope: "col" }, "Keys"))),
    el("tbody", {}, ...shortcuts.map((s) => el("tr", {}, el("th", { scope: "row" }, s.what), el("td", {}, keysOf(s.keys))))),
  );
  helpButton.addEventListener("click", openHelp);
  dialog.addEventListener("close", () => {
    // Back to where the user was, unless they have already moved on (the event comes a task later).
    if (document.activeElement === document.body || dialog.contains(document.activeElement)) returnFocus?.focus?.();
  });
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || dialog.open) return;
    const shortcut = shortcuts.find((s) => s.test(event));
    if (!shortcut) return;
    event.preventDefault();
    shortcut.run();
  });
}

function keysOf(combos) {
  const parts = [];
  combos.forEach((combo, i) => {
    if (i) parts.push(" or ");
    combo.forEach((key, j) => {
      if (j) parts.push("+");
      parts.push(el("kbd", {}, key));
    });
  });
  return parts;
}
