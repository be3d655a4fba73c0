// What the admin page's sections share: a notice line per section, and one modal dialog
// that asks for a confirmation or a value (native <dialog>: focus is trapped and Escape cancels).

import { el, fill, show } from "./dom.js";

// Show ``text`` in a section's notice line, styled as an error when ``isError``.
export function say(node, text, isError = false) {
  node.textContent = text;
  node.className = isError ? "error" : "notice";
  show(node, true);
}

const $ = (id) => document.getElementById(id);

// Open the dialog with ``title``, ``body`` nodes and an OK button labelled ``ok`` (null: no OK,
// the other button says ``cancel``). ``act(form)`` runs on OK (Enter in a field is OK too):
// return to close, throw an Error to show its message and stay. Resolves to true after OK.
export function ask({ title, body = [], ok = "OK", cancel = "Cancel", danger = false, act = async () => {} }) {
  const dialog = $("adminDialog");
  const form = $("adminDialogForm");
  const okButton = $("adminDialogOk");
  const cancelButton = $("adminDialogCancel");
  $("adminDialogTitle").textContent = title;
  fill($("adminDialogBody"), ...body);
  okButton.textContent = ok ?? "";
  okButton.className = danger ? "danger" : "primary";
  cancelButton.textContent = ok === null ? "Close" : cancel;
  show($("adminDialogError"), false);
  show(okButton, ok !== null);
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const onSubmit = async (event) => {
      event.preventDefault();
      if (ok === null) return;
      okButton.disabled = true;
      try {
        await act(form);
        finish(true);
      } catch (err) {
        $("adminDialogError").textContent = err.message;
        show($("adminDialogError"), true);
      } finally {
        okButton.disabled = false;
      }
    };
    const onCancel = () => finish(false);
    function finish(result) {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      cancelButton.removeEventListener("click", onCancel);
      if (dialog.open) dialog.close();
      opener?.focus?.();
      resolve(result);
    }
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    cancelButton.addEventListener("click", onCancel);
    dialog.showModal();
    (form.querySelector("#adminDialogBody input") || (ok === null ? cancelButton : okButton)).focus();
  });
}

// A labelled input for a dialog's body.
export function field(label, attrs) {
  const id = `dialog-${attrs.name}`;
  return el("div", { class: "field" }, el("label", { for: id }, label), el("input", { id, ...attrs }));
}
