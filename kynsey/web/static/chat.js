// The chat: open a conversation, send a message, stream the reply in, and
// re-attach to a reply still being written (after a reload, or a cut connection).

import * as api from "./api.js";
import { clearAfter, show } from "./dom.js";
import { conversationFromHash, renderConversationList } from "./chat-list.js";
import { followPane } from "./follow.js";
import { messageNode, paintMessage } from "./message-view.js";
import { followReply } from "./reply.js";
import { activeTier, poll as refreshTierStatus, tierName } from "./tiers.js";
import { describeError } from "./words.js";

const state = { conversations: [], current: null, messages: [], writing: new Set(), creating: false, ui: null, pane: null };

export function initChat(ui) {
  state.ui = ui;
  state.pane = followPane(ui.messages, ui.jump);
  ui.newChat.addEventListener("click", newChat);
  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    submit();
  });
  window.addEventListener("hashchange", openFromHash);
}

export async function loadConversations() {
  try {
    state.conversations = (await api.listConversations()).conversations;
  } catch (err) {
    setChatError(`Couldn't load your conversations. ${describeError(err)}`);
  }
  renderList();
}

export async function openFromHash() {
  const id = conversationFromHash();
  if (!id) startNew();
  else if (id !== state.current || !state.messages.length) await openConversation(id);
}

function renderList() {
  renderConversationList(state.ui.list, state.conversations, state.current, remove);
}

export function newChat() {
  startNew();
  state.ui.input.focus();
}

function startNew() {
  state.current = null;
  state.messages = [];
  if (location.hash) history.pushState(null, "", location.pathname);
  state.ui.title.textContent = "New chat";
  renderMessages();
  renderList();
  updateComposer();
}

async function openConversation(id) {
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
  renderMessages();
  const live = body.messages.findLast((m) => m.role === "assistant" && m.status === "streaming");
  if (live) stream(id, live, (onEvent) => api.reattach(id, live.id, onEvent));
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

async function submit() {
  const { ui } = state;
  const content = ui.input.value;
  if (!content.trim() || state.creating || state.writing.has(state.current)) return;
  setChatError("");
  state.creating = !state.current; // a second Enter must not start a second conversation
  const id = state.current || (await create(content));
  state.creating = false;
  if (!id) return;
  const tier = activeTier();
  const asked = { role: "user", content, status: "complete" };
  const reply = { role: "assistant", content: "", status: "streaming", tier: tier?.tier, display_name: tier?.display_name };
  ui.input.value = "";
  append(asked, reply);
  const refused = () => {
    state.messages = state.messages.filter((m) => m !== asked && m !== reply);
    renderMessages();
    if (!ui.input.value) ui.input.value = content;
  };
  await stream(id, reply, (onEvent) => api.sendMessage(id, content, onEvent), refused);
}

async function create(content) {
  try {
    const conversation = await api.createConversation(content.trim().split("\n")[0].slice(0, 60));
    state.conversations.unshift(conversation);
    state.current = conversation.id;
    history.pushState(null, "", `#c=${encodeURIComponent(conversation.id)}`);
    state.ui.title.textContent = conversation.title || "Untitled";
    renderList();
    return conversation.id;
  } catch (err) {
    setChatError(describeError(err, { action: "chat" }));
    return null;
  }
}

// Run one reply stream into ``reply``; ``refused`` undoes the send when the server refused it.
async function stream(id, reply, run, refused = null) {
  state.writing.add(id);
  updateComposer();
  try {
    await followReply(reply, run, () => repaint(reply));
    if (reply.status === "streaming") await resync(id, reply);
  } catch (err) {
    if (refused && !reply.id && reply.status === "streaming") {
      refused(); // nothing was stored: put the draft back and say why in place
      setChatError(describeError(err, { action: "chat" }), err.retryAfter ? Date.now() + err.retryAfter * 1000 : null);
    } else {
      Object.assign(reply, { status: reply.content ? "interrupted" : "failed", error: err.message, error_code: err.code });
      repaint(reply);
    }
  } finally {
    state.writing.delete(id);
    updateComposer();
    loadConversations();
    if (reply.status !== "complete") refreshTierStatus(); // a failure often means a tier's status changed
  }
}

// The connection closed without an end: the server may still be writing, so look again.
async function resync(id, reply) {
  if (state.current !== id) return;
  const body = await api.getConversation(id);
  const saved = body.messages.find((m) => m.id === reply.id);
  if (saved?.status === "streaming") {
    await followReply(reply, (onEvent) => api.reattach(id, reply.id, onEvent), () => repaint(reply));
  } else if (saved) {
    Object.assign(reply, saved);
  }
  if (reply.status === "streaming") throw new api.ApiError(0, { code: "stream_cut", message: "the reply stream was cut" });
}

function decorate(msg) {
  msg.tierName = msg.tier ? tierName(msg.tier) : null;
  msg.fallbackName = msg.fallback_from ? tierName(msg.fallback_from) : null;
  return msg;
}

function renderMessages() {
  const { ui } = state;
  ui.messages.replaceChildren(...state.messages.map((m) => (m.node = messageNode(decorate(m)))));
  show(ui.empty, !state.messages.length);
  state.pane.toLatest();
}

function append(...messages) {
  for (const msg of messages) {
    state.messages.push(msg);
    msg.node = messageNode(decorate(msg));
    state.ui.messages.append(msg.node);
  }
  show(state.ui.empty, false);
  state.pane.toLatest(); // the user just sent something: show it, and follow the reply
}

function repaint(msg) {
  if (msg.node) paintMessage(msg.node, decorate(msg));
  state.pane.grew();
}

function updateComposer() {
  const writing = state.writing.has(state.current);
  state.ui.send.disabled = writing;
  state.ui.send.textContent = writing ? "Writing…" : "Send";
}

export function setChatError(text, until = null) {
  clearAfter(state.ui.error, text, until);
}
