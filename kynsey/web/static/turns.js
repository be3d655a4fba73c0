// Every way a reply starts, and stopping it: a message (a new chat's first one
// creates the conversation in the same call, so a refused one leaves nothing), a
// new version of a reply (Regenerate, Retry, another tier) and a new version of a
// question (Edit). Earlier versions stay on the server, behind < 1/2 >.

import * as api from "./api.js";
import { announce } from "./dom.js";
import { busy, renderMessages, repaint, replaceFrom, setChatError, state, updateComposer } from "./chat-state.js";
import { followReply } from "./reply.js";
import { activeTier, findTier, poll as refreshTierStatus } from "./tiers.js";
import { describeError } from "./words.js";

// onCreated(id, view): the new chat opened as ``view`` now has an id; onConversation({id, title}); afterReply(): a reply ended;
// onEditRefused(msg, text): the server refused an edit (nothing was stored).
let hooks = { onCreated() {}, onConversation() {}, afterReply() {}, onEditRefused() {} };

export function initTurns(given) {
  hooks = { ...hooks, ...given };
}

// A new version beside ``sibling`` (none: a message of its own).
function versionOf(sibling) {
  const ids = sibling ? [...(sibling.sibling_ids || [sibling.id])] : [];
  return { parent_id: sibling?.parent_id ?? null, sibling_ids: ids, version: ids.length + 1, versions: ids.length + 1 };
}

const question = (content, sibling = null) => ({ role: "user", content, status: "complete", ...versionOf(sibling) });

function answer(slug, sibling = null) {
  const tier = (slug && findTier(slug)) || activeTier();
  return { role: "assistant", content: "", status: "streaming", tier: tier?.tier, display_name: tier?.display_name, ...versionOf(sibling) };
}

function adopt(msg, id) {
  msg.id = id;
  if (!msg.sibling_ids.includes(id)) msg.sibling_ids.push(id);
}

export async function submit() {
  const { ui } = state;
  const content = ui.input.value;
  if (!content.trim() || busy()) return;
  setChatError("");
  const id = state.current;
  const before = state.messages.slice();
  const asked = question(content, null);
  const reply = answer(null);
  ui.input.value = "";
  replaceFrom(before.length, asked, reply);
  const run = id ? (on) => api.sendMessage(id, content, on) : (on) => api.startConversation(content, on);
  await stream(id, reply, asked, run, () => {
    restore(before);
    if (!ui.input.value) ui.input.value = content; // nothing was stored: the draft comes back
  });
}

export async function regenerate(msg, tier) {
  const reply = answer(tier || msg.tier, msg);
  await newVersion(msg, [reply], (id, on) => api.regenerate(id, msg.id, tier, on));
}

export async function edit(msg, content) {
  await newVersion(msg, [question(content, msg), answer(null)], (id, on) => api.editMessage(id, msg.id, content, on),
    () => hooks.onEditRefused(msg, content)); // the edited text is not lost: the box opens again with it
}

// Show ``shown`` (a new version of ``msg``, and for a question its reply) in place of ``msg``
// and what followed it, and stream the reply in; a refusal puts the old path back.
async function newVersion(msg, shown, call, refused = () => {}) {
  const at = state.messages.indexOf(msg);
  if (busy() || at < 0 || !msg.id) return;
  setChatError("");
  const id = state.current;
  const before = state.messages.slice();
  replaceFrom(at, ...shown);
  state.ui.input.focus({ preventScroll: true }); // where Escape stops it and the next message goes
  const reply = shown.at(-1);
  const asked = shown.length > 1 ? shown[0] : null;
  await stream(id, reply, asked, (on) => call(id, on), () => {
    restore(before);
    refused();
  });
}

// Re-attach to a reply still being written (after a reload, or a cut connection).
export function follow(id, reply) {
  return stream(id, reply, null, (on) => api.reattach(id, reply.id, on));
}

// Stop the reply being written in the conversation shown; false when there is none.
export function stop() {
  const reply = state.writing.get(state.current);
  if (!reply) return false;
  if (reply.id) requestStop(state.current, reply);
  else reply.stopAsked = true; // stopped as soon as the server says its id
  return true;
}

async function requestStop(id, reply) {
  try {
    await api.stopReply(id, reply.id);
    announce("Stopped the reply.");
  } catch (err) {
    setChatError(describeError(err));
  }
}

function restore(messages) {
  state.messages = messages;
  renderMessages();
}

// Run one reply stream into ``reply`` (and the ids into ``asked``); ``undo`` takes back what the
// page showed when the server refused the request before storing anything.
async function stream(id, reply, asked, run, undo = null) {
  let key = id;
  const view = state.view;
  state.writing.set(key, reply);
  updateComposer();
  const relay = (onEvent) => run((name, data) => {
    if (name === "accepted") key = accepted(key, view, reply, asked, data);
    else if (name === "conversation") hooks.onConversation(data);
    onEvent(name, data);
  });
  let refusal = null;
  try {
    await followReply(reply, relay, () => repaint(reply));
    if (reply.status === "streaming") await resync(key, reply);
  } catch (err) {
    if (undo && !reply.id && reply.status === "streaming") {
      refusal = err; // nothing was stored
    } else {
      Object.assign(reply, { status: reply.content ? "interrupted" : "failed", error: err.message, error_code: err.code });
      repaint(reply);
    }
  } finally {
    state.writing.delete(key);
    updateComposer();
    hooks.afterReply();
    if (reply.status !== "complete") refreshTierStatus(); // a failure often means a tier's status changed
  }
  if (refusal) {
    undo();
    setChatError(describeError(refusal, { action: "chat" }), refusal.retryAfter ? Date.now() + refusal.retryAfter * 1000 : null);
  }
}

function accepted(key, view, reply, asked, data) {
  if (key === null && data.conversation_id) { // a new chat's first message: its conversation exists now
    state.writing.delete(null);
    key = data.conversation_id;
    state.writing.set(key, reply);
    hooks.onCreated(key, view);
  }
  adopt(reply, data.message_id);
  if (asked && data.user_message_id) {
    adopt(asked, data.user_message_id);
    reply.parent_id = asked.id;
    repaint(asked);
  }
  if (reply.stopAsked) requestStop(key, reply);
  updateComposer();
  return key;
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
