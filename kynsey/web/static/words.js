// What the page says: status meanings, and every error in words with what to do.

export const STATUS = {
  ready: { label: "Ready", meaning: "loaded in memory, answers at once" },
  cold: { label: "Cold", meaning: "installed; the first request loads it, which takes a moment" },
  warming: { label: "Warming up", meaning: "loading into memory now" },
  missing: { label: "Missing", meaning: "its model is not installed on the server" },
  unreachable: { label: "Unreachable", meaning: "its model server does not answer" },
  degraded: { label: "Degraded", meaning: "failing repeatedly, paused for a short cooldown" },
};

export const UNAVAILABLE = new Set(["missing", "unreachable", "degraded"]);

export function statusWords(status) {
  return STATUS[status] || { label: status, meaning: "status unknown" };
}

const WHAT_TO_DO = {
  missing: "Pick another tier, or ask an admin to install its model.",
  unreachable: "Try again in a minute, or pick another tier.",
  degraded: "Try again shortly, or pick another tier.",
};

export function unavailableAdvice(status) {
  return WHAT_TO_DO[status] || "Pick another tier.";
}

// context: { action: "switch" | "chat" | "reply" | "login" | "warm" | "load", tierName }; "chat" is a
// message the server refused before storing anything (the draft comes back), "reply" one that stopped midway.
export function describeError(err, context = {}) {
  const code = err.code || "error";
  const message = err.message || "";
  const wait = err.retryAfter || err.details?.retry_after;
  const words = {
    network: () => "Kynsey does not answer. Check your connection, then try again.",
    stream_cut: () => "The connection closed during the reply. What arrived is kept; reload the conversation to see the rest.",
    rate_limited: () => tooMany(context.action, wait),
    tier_locked: () => `${message} Ask an admin to change your plan.`,
    feature_disabled: () => "Switching tiers is turned off right now; the default tier answers your messages.",
    tier_unavailable: () => unavailable(err, context),
    still_warming: () => `${context.tierName || "The tier"} is still loading. It is your active tier and answers once it is ready.`,
    backend_unreachable: () => "The model server does not answer. Try again in a minute, or pick another tier.",
    backend_busy: () => "The model server is busy. Wait a few seconds, then try again.",
    model_missing: () => "This tier's model is not installed. Pick another tier, or ask an admin to install it.",
    model_load_failed: () => "The model failed to load. Try again, or pick another tier.",
    backend_error: () => `The model server answered with an error: ${message || "no reason given"}. Retry, or pick another tier.`,
    prompt_too_long: () => "This conversation is too long for this tier's model to read. Shorten your message, start a new chat, or pick a tier with a larger context.",
    stream_broken: () => "The model server cut the reply short. What arrived is kept; Retry writes a new version.",
    interrupted: () => "The reply stopped before it finished. What arrived is kept; Retry writes a new version.",
    shutdown: () => "This Kynsey server is shutting down. Reload in a moment to see the rest of the reply.",
    database_unavailable: () => databaseDown(context.action),
    database_busy: () => `Kynsey's database is too busy right now${notSent(context.action)}. Wait a few seconds, then try again.`,
    database_refused: () => "The database refused to save the rest of this reply, so it stopped. Retry writes a new version.",
    not_running_here: () => "This reply is being written by another Kynsey server, so it can't be stopped from here. Wait for it, or reload.",
    circuit_open: () => "This model keeps failing, so it is paused for a short cooldown. Try again shortly, or pick another tier.",
    not_authenticated: () => notAuthenticated(err, context),
    csrf_failed: () => "This page's security token is out of date. Reload the page, then try again.",
    conversation_not_found: () => "This conversation no longer exists. Pick another one, or start a new chat.",
    deleted: () => "This conversation was deleted meanwhile. Pick another one, or start a new chat.",
    unknown_tier: () => `${capitalise(message)}. Reload the page to see the tiers there are.`,
    not_found: () => `${capitalise(message)}.`,
    payload_too_large: () => `That is too long to send${err.details?.limit ? ` (over ${err.details.limit} bytes)` : ""}. Shorten it, then try again.`,
    conflict: () => `${capitalise(message)}.`,
    invalid_request: () => `${capitalise(message)}.`,
    forbidden: () => `${capitalise(message)}.`,
  };
  const say = words[code];
  return say ? say() : `Something went wrong (${message || code}). Try again; if it keeps happening, tell an admin.`;
}

function tooMany(action, wait) {
  const what = { switch: "switches", warm: "switches", chat: "messages", reply: "messages" }[action] || "requests";
  return wait ? `Too many ${what} - try again in ${wait} s.` : `Too many ${what} - wait a moment, then try again.`;
}

function databaseDown(action) {
  if (action === "reply") return "Kynsey's database stopped answering during the reply. What arrived is saved once it is back; reload then to see it.";
  return `Kynsey's database does not answer${notSent(action)}. Try again in a minute.`;
}

const notSent = (action) => (action === "chat" ? ", so your message was not sent" : "");

function unavailable(err, context) {
  const status = err.details?.tier_status;
  const name = context.tierName || "This tier";
  const why = STATUS[status]?.meaning || "it is not available";
  return `${name} can't be used right now: ${why}. ${unavailableAdvice(status)}`;
}

function notAuthenticated(err, context) {
  if (context.action === "login") return "Wrong user name or password. Check both, then try again.";
  if (err.details?.reason === "session_expired") return "Your session has expired. Log in again to continue.";
  return "You are logged out. Log in to continue.";
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}
