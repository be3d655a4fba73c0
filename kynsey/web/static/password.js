// Changing your own password: a dialog from the account menu (PUT /api/auth/password).

import * as api from "./api.js";
import { announce, show } from "./dom.js";
import { describeError } from "./words.js";

export function initPasswordDialog({ button, dialog, form, current, next, error, done, close, save }) {
  const say = (node, message) => {
    node.textContent = message;
    show(node, Boolean(message));
  };
  const fail = (message) => say(error, message);
  button.addEventListener("click", () => {
    form.reset();
    fail("");
    say(done, "");
    dialog.showModal();
    current.focus();
  });
  close.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    fail("");
    say(done, "");
    try {
      const ended = await api.changePassword(current.value, next.value);
      form.reset();
      const others = ended.sessions === 1 ? "1 other browser session" : `${ended.sessions} other browser sessions`;
      say(done, `Password changed; ${others} logged out.`);
      announce(done.textContent);
      close.focus();
    } catch (err) {
      fail(describeError(err));
      (err.details && err.details.field === "password" ? next : current).focus();
    } finally {
      save.disabled = false;
    }
  });
}
