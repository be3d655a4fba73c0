// Kynsey's HTTP API for the page: one place that knows the paths, sends the
// CSRF token with every write and turns error bodies into ApiError.

import { readEvents } from "./sse.js";

let csrfToken = null;
const unauthenticated = new Set();
const succeeded = new Set();

export class ApiError extends Error {
  constructor(status, error = {}, retryAfterHeader = null) {
    super(error.message || `the server answered HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status === 0 ? "network" : "http_error");
    this.details = error;
    this.retryAfter = Number(error.retry_after ?? retryAfterHeader) || null;
  }
}

// Called with the ApiError whenever a request finds the session gone.
export function onUnauthenticated(listener) {
  unauthenticated.add(listener);
}

// Called whenever Kynsey answers a request with success: it is reachable again.
export function onSuccess(listener) {
  succeeded.add(listener);
}

function ok(response) {
  succeeded.forEach((listener) => listener(response));
}

async function send(method, path, body, accept = "application/json") {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) init.body = JSON.stringify(body);
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: "network", message: "Kynsey did not answer" });
  }
}

async function failure(response, path) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    error = { message: `the server answered HTTP ${response.status}` };
  }
  const err = new ApiError(response.status, error, response.headers.get("Retry-After"));
  if (response.status === 401 && path !== "/api/auth/login") {
    csrfToken = null;
    unauthenticated.forEach((listener) => listener(err));
  }
  return err;
}

async function call(method, path, body) {
  const response = await send(method, path, body);
  if (!response.ok) throw await failure(response, path);
  ok(response);
  return response.status === 204 ? null : response.json();
}

// -- session --------------------------------------------------------------
export async function login(name, password) {
  const session = await call("POST", "/api/auth/login", { name, password });
  csrfToken = session.csrf_token;
  return session;
}

export async function me() {
  const session = await call("GET", "/api/auth/me");
  csrfToken = session.csrf_token || csrfToken;
  return session;
}

// Your own password, giving the current one: {sessions} your other browser sessions ended.
export const changePassword = (currentPassword, password) =>
  call("PUT", "/api/auth/password", { current_password: currentPassword, password });

export async function logout() {
  await call("POST", "/api/auth/logout");
  csrfToken = null;
}

// -- tiers (the plan's three calls) ----------------------------------------
export const getModelTiers = () => call("GET", "/api/models/tiers");
export const setModelTier = (tier) => call("POST", "/api/models/tier", { tier });
export const checkModelAvailability = () => call("GET", "/api/models/status");
export const warmTier = (tier) => call("POST", "/api/models/warm", { tier });

// -- conversations ----------------------------------------------------------
const conv = (id) => `/api/conversations/${encodeURIComponent(id)}`;

// ``q``: only those whose title or any message holds it, each with a ``snippet`` of the text that matched.
export const listConversations = (q = "") => call("GET", `/api/conversations${q ? `?q=${encodeURIComponent(q)}` : ""}`);
export const createConversation = (title) => call("POST", "/api/conversations", title ? { title } : {});
export const getConversation = (id) => call("GET", conv(id));
export const deleteConversation = (id) => call("DELETE", conv(id));
export const renameConversation = (id, title) => call("PATCH", conv(id), { title });
// Show another version of a message: the conversation as shown afterwards.
export const showVersion = (id, messageId) => call("POST", `${message(id, messageId)}/show`);
// Stop a reply being written: {stopped, message}.
export const stopReply = (id, messageId) => call("POST", `${message(id, messageId)}/stop`);

const message = (id, messageId) => `${conv(id)}/messages/${encodeURIComponent(messageId)}`;

// A new conversation with its first message, in one call (a refused message creates nothing).
// Its events begin with "conversation" {id, title, created_at, updated_at}.
export async function startConversation(content, onEvent) {
  return stream("POST", "/api/conversations", { content }, onEvent);
}

// A new version of a reply, from ``tier`` (another tier the plan grants) or the current one.
export async function regenerate(id, messageId, tier, onEvent) {
  return stream("POST", `${message(id, messageId)}/regenerate`, tier ? { tier } : {}, onEvent);
}

// A new version of one of your messages, and a reply to it.
export async function editMessage(id, messageId, content, onEvent) {
  return stream("POST", `${message(id, messageId)}/edit`, { content }, onEvent);
}

// Post a message and relay the reply's events (start, delta, done, error) to
// onEvent(name, data). Errors before the stream starts throw an ApiError. Every
// reply stream first gives "accepted" {conversation_id, message_id, user_message_id}
// from its headers: the reply can be stopped from then on, before its first token.
export async function sendMessage(id, content, onEvent) {
  return stream("POST", `${conv(id)}/messages`, { content }, onEvent);
}

// Follow a reply that is still being written: start, the text so far, then live events.
export async function reattach(id, messageId, onEvent) {
  return stream("GET", `${conv(id)}/messages/${encodeURIComponent(messageId)}/stream`, undefined, onEvent);
}

async function stream(method, path, body, onEvent) {
  const response = await send(method, path, body, "text/event-stream");
  if (!response.ok) throw await failure(response, path);
  ok(response);
  const ids = ["Conversation", "Message", "User-Message"].map((name) => response.headers.get(`X-${name}-Id`));
  if (ids[1]) onEvent("accepted", { conversation_id: ids[0], message_id: ids[1], user_message_id: ids[2] });
  try {
    await readEvents(response.body, onEvent);
  } catch {
    throw new ApiError(0, { code: "stream_cut", message: "the connection closed during the reply" });
  }
}

// -- upgrade requests (SPEC F19) ----------------------------------------------
// 201 {id, plan, status: "pending", note, created_at, decided_at, decided_by}; 409 while one is pending.
export const requestUpgrade = (plan, note) => call("POST", "/api/upgrade-requests", note ? { plan, note } : { plan });
export const listUpgradeRequests = () => call("GET", "/api/upgrade-requests"); // {requests: [...]}, newest first

// -- admin -----------------------------------------------------------------
export const listUsers = () => call("GET", "/api/admin/users");
export const changePlan = (name, plan) => call("PUT", `/api/admin/users/${encodeURIComponent(name)}/plan`, { plan });

export function listAudit(filters = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (value !== "" && value !== null && value !== undefined) query.set(key, value);
  }
  return call("GET", `/api/admin/audit?${query}`);
}

// -- admin: accounts, upgrade requests, catalog ------------------------------
const adminUser = (name) => `/api/admin/users/${encodeURIComponent(name)}`;

export const createUser = (body) => call("POST", "/api/admin/users", body);
export const resetPassword = (name, password) => call("PUT", `${adminUser(name)}/password`, { password });
export const setDisabled = (name, disabled) => call("PUT", `${adminUser(name)}/disabled`, { disabled });
export const setAdmin = (name, admin) => call("PUT", `${adminUser(name)}/admin`, { admin });
export const deleteUser = (name) => call("DELETE", adminUser(name));
export const logOutEverywhere = (name, tokens) => call("POST", `${adminUser(name)}/logout`, { tokens });
export const listTokens = (name) => call("GET", `${adminUser(name)}/tokens`);
export const revokeToken = (name, id) => call("DELETE", `${adminUser(name)}/tokens/${encodeURIComponent(id)}`);
export const listAllUpgradeRequests = (status) => call("GET", `/api/admin/upgrade-requests${status ? `?status=${status}` : ""}`);
export const decideUpgradeRequest = (id, verdict) => call("POST", `/api/admin/upgrade-requests/${encodeURIComponent(id)}/${verdict}`);
export const catalogStatus = () => call("GET", "/api/catalog/status");
export const reloadCatalog = () => call("POST", "/api/admin/catalog/reload");

// -- admin: operations (the dashboard) -------------------------------------------
export const getDashboard = () => call("GET", "/api/admin/dashboard");
export const setFlag = (name, body) => call("PUT", `/api/admin/flags/${encodeURIComponent(name)}`, body);
export const verifyAudit = () => call("GET", "/api/admin/audit/verify");
