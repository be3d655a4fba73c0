// The chat: the conversations at the side (search, rename, delete), opening one,
// moving between versions of its messages, editing. Replies start and stop in
// turns.js; what is shown is painted by chat-state.js.

import * as api from "./api.js";
import { announce } from "./dom.js";
import { busy, renderMessages, setChatError, state, updateComposer } from "./chat-state.js";
import { conversationFromHash, renderConversationList } from "./chat-list.js";
import { openEditor } from "./edit-box.js";
import { followPane } from "./follow.js";
import { setMessageHandlers } from "./message-actions.js";
import { paintMessage } from "./message-view.js";
import { edit, follow, initTurns, regenerate, stop, submit } from "./turns.js";
import { describeError } from "./words.js";

export { setChatError, stop as stopReply };
export const canStop = busy;

const SEARCH_WAIT_MS = 250;
let listRequest = 0;
let said = ""; // the search whose result count was announced

export function initChat(ui) {
  state.ui = ui;
  state.pane = followPane(ui.messages, ui.jump);
  setMessageHandlers({ busy, onVersion: showVersion, onEdit: startEdit, onRegenerate: regenerate });
  initTurns({ onCreated: adoptNew, onConversation: named, afterReply: loadConversations, onEditRefused: startEdit });
  ui.newChat.addEventListener("click", newChat);
  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  ui.send.addEventListener("click", (event) => {
    if (!busy()) return;
    event.preventDefault(); // Send is Stop while a reply is written here
    stop();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    submit();
  });
  initSearch(ui.search);
  window.addEventListener("hashchange", openFromHash);
  updateComposer();
}

function initSearch(input) {
  let timer = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.query = input.value.trim();
      loadConversations();
    }, SEARCH_WAIT_MS);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !input.value) return;
    event.preventDefault(); // the first Escape clears the search; the next closes the drawer
    event.stopPropagation();
    input.value = "";
    input.dispatchEvent(new Event("input"));
  });
}

export async function loadConversations() {
  const ticket = ++listRequest;
  try {
    const { conversations } = await api.listConversations(state.query);
    if (ticket !== listRequest) return; // a newer search answered meanwhile
    state.conversations = conversations;
    if (state.query !== said) announce(state.query ? `${conversations.length} conversations match.` : "");
    said = state.query;
  } catch (err) {
    setChatError(`Couldn't load your conversations. ${describeError(err)}`);
  }
  renderList();
}

export async function openFromHash() {
  const id = conversationFromHash();
  if (!id) {
    if (state.current !== null || !state.messages.length) startNew(); // never wipe a first message being sent
  } else if (id !== state.current || !state.messages.length) {
    await openConversation(id);
  }
}

function renderList() {
  const { list } = state.ui;
  if (list.querySelector(".conv-title-input")) return; // never under a title being typed: it comes after the rename
  // A re-drawn list keeps focus on the same control of the same conversation.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const where = focused && [focused.closest("li")?.dataset.id, focused.dataset.role];
  renderConversationList(list, state.conversations, { currentId: state.current, query: state.query,
    onDelete: remove, onRename: rename });
  if (where) list.querySelector(`li[data-id="${where[0]}"] [data-role="${where[1]}"]`)?.focus();
}

export function newChat() {
  startNew();
  state.ui.input.focus();
}

function startNew() {
  state.view += 1;
  state.current = null;
  state.messages = [];
  if (location.hash) history.pushState(null, "", location.pathname);
  state.ui.title.textContent = "New chat";
  renderMessages();
  renderList();
  updateComposer();
}

// A new chat's first message created its conversation: it is the one shown, unless the user moved on.
function adoptNew(id, view) {
  if (state.view !== view) return;
  state.current = id;
  history.pushState(null, "", `#c=${encodeURIComponent(id)}`);
  updateComposer();
}

function named(conversation) {
  if (state.current === conversation.id) state.ui.title.textContent = conversation.title || "Untitled";
  loadConversations();
}

async function openConversation(id) {
  state.view += 1;
  state.current = id;
  setChatError("");
  renderList();
  updateComposer();
  let body;
  try {
    body = await api.getConversation(id);
  } catch (err) {
    setChatError(describeError(err, { action: "load" }));
    return;
  }
  if (state.current !== id) return; // the user opened another one meanwhile
  state.ui.title.textContent = body.title || "Untitled";
  state.messages = body.messages;
  const writing = state.writing.get(id); // this page is still reading that reply: keep painting it
  const at = writing ? state.messages.findIndex((m) => m.id === writing.id) : -1;
  if (at >= 0) state.messages[at] = writing;
  renderMessages();
  const live = body.messages.findLast((m) => m.role === "assistant" && m.status === "streaming");
  if (live && !writing) follow(id, live);
}

async function remove(conversation) {
  if (!confirm(`Delete “${conversation.title || "Untitled"}”? This can't be undone.`)) return;
  try {
    await api.deleteConversation(conversation.id);
  } catch (err) {
    setChatError(describeError(err));
    return;
  }
  if (conversation.id === state.current) startNew();
  await loadConversations();
  state.ui.newChat.focus();
}

async function rename(conversation, title) {
  try {
    const saved = await api.renameConversation(conversation.id, title);
    Object.assign(conversation, { title: saved.title });
  } catch (err) {
    setChatError(describeError(err));
    return false;
  }
  if (conversation.id === state.current) state.ui.title.textContent = conversation.title;
  announce(`Renamed to “${conversation.title}”.`);
  setTimeout(loadConversations); // once the box is gone: a search may no longer match it
  return true;
}

// Move to the previous (-1) or next (+1) version of ``msg``: the server moves the shown leaf.
async function showVersion(msg, step) {
  const target = msg.sibling_ids?.[msg.version - 1 + step];
  const at = state.messages.indexOf(msg);
  if (!target || busy() || at < 0) return;
  const id = state.current;
  let body;
  try {
    body = await api.showVersion(id, target);
  } catch (err) {
    setChatError(describeError(err));
    return;
  }
  if (state.current !== id) return;
  state.messages = body.messages;
  renderMessages({ follow: false });
  const shown = state.messages[at];
  if (!shown) return;
  // The reader stays on this message, on the control they used (or its partner at the end of the row).
  const controls = shown.node.querySelector(".versions");
  const again = controls.querySelector(step < 0 ? ".version-prev" : ".version-next");
  (again.disabled ? controls.querySelector("button:not(:disabled)") : again)?.focus();
  shown.node.scrollIntoView({ block: "nearest" });
  announce(`Version ${shown.version} of ${shown.versions}.`);
}

function startEdit(msg, draft = msg.content) {
  if (busy() || !msg.node) return;
  openEditor(msg.node, draft, {
    onSend: (text) => edit(msg, text),
    onCancel: () => {
      paintMessage(msg.node, msg);
      msg.node.querySelector(".act-edit")?.focus();
    },
  });
}
