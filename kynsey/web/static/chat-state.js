// What the chat shows, and painting it: the conversation open, the path of its
// messages (each with its versions), which replies are being written, the composer.

import { announce, clearAfter, icon, show } from "./dom.js";
import { paintActions } from "./message-actions.js";
import { messageNode, paintMessage } from "./message-view.js";
import { tierName } from "./tiers.js";

// writing: conversation id (null: a new chat not created yet) -> the reply being written there;
// view: counts what was opened (a conversation, a new chat), so late answers know if it is still shown.
export const state = { conversations: [], current: null, messages: [], writing: new Map(), view: 0, query: "", ui: null, pane: null };

export const busy = () => state.writing.has(state.current);

function decorate(msg) {
  msg.tierName = msg.tier ? tierName(msg.tier) : null;
  msg.fallbackName = msg.fallback_from ? tierName(msg.fallback_from) : null;
  return msg;
}

export function renderMessages({ follow = true } = {}) {
  const { ui } = state;
  ui.messages.replaceChildren(...state.messages.map((m) => (m.node = messageNode(decorate(m)))));
  show(ui.empty, !state.messages.length);
  if (follow) state.pane.toLatest();
}

// Show ``messages`` after the first ``keep`` of the path (a new turn, or a new version and its reply).
export function replaceFrom(keep, ...messages) {
  for (const old of state.messages.splice(keep)) old.node?.remove();
  for (const msg of messages) {
    state.messages.push(msg);
    msg.node = messageNode(decorate(msg));
    state.ui.messages.append(msg.node);
  }
  show(state.ui.empty, !state.messages.length);
  state.pane.toLatest(); // the user just sent something: show it, and follow the reply
}

export function repaint(msg) {
  if (msg.node) paintMessage(msg.node, decorate(msg));
  state.pane.grew();
}

// Send becomes Stop while a reply is written here; the messages' actions wait for it.
export function updateComposer() {
  const { send } = state.ui;
  const writing = busy();
  const was = send.dataset.mode;
  send.dataset.mode = writing ? "stop" : "send";
  if (was !== send.dataset.mode) {
    send.replaceChildren(icon(writing ? "stop" : "send"), writing ? "Stop" : "Send");
    send.setAttribute("aria-label", writing ? "Stop the reply" : "Send");
    send.title = writing ? "Stop the reply (Esc)" : "Send (Enter)";
    state.ui.hint.textContent = writing
      ? "Esc or Stop ends the reply; what it wrote is kept. You can write your next message meanwhile."
      : "Enter sends, Shift+Enter adds a line. Press ? for shortcuts.";
    if (was === "stop" && !writing && document.activeElement === send) announce("The reply has ended.");
  }
  for (const msg of state.messages) if (msg.node) paintActions(msg.node, msg);
}

export function setChatError(text, until = null) {
  clearAfter(state.ui.error, text, until);
}
