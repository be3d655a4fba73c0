// The tier state of the page: what GET /api/models/tiers said last, drawn into
// the active model display and the selector, refreshed in the background.

import * as api from "./api.js";
import { clearAfter, show } from "./dom.js";
import { paintActive, paintOption } from "./tier-view.js";
import { describeError } from "./words.js";

const POLL_MS = 15000;
const FAST_POLL_MS = 1500; // while a tier warms up

export const state = { tiers: [], plan: null, enabled: true, switching: null, focused: null, ui: null };
const listeners = new Set();
let pollTimer = null;
let progressTimer = null;
let messageFromPoll = false;

export function bindTierUi(ui) {
  state.ui = ui;
}

export const findTier = (slug) => state.tiers.find((t) => t.tier === slug);
export const activeTier = () => state.tiers.find((t) => t.active) || null;
export const tierName = (slug) => findTier(slug)?.display_name || slug;

export function onTiersChange(listener) {
  listeners.add(listener);
}

export async function refreshTiers() {
  const body = await api.getModelTiers();
  state.tiers = body.tiers;
  state.plan = body.plan;
  state.enabled = body.switching_enabled !== false; // missing means on
  if (messageFromPoll) setTierMessage("");
  renderTiers();
  listeners.forEach((listener) => listener(body));
  return body;
}

export function renderTiers() {
  const { ui } = state;
  const active = activeTier();
  if (active) paintActive(ui.display, active);
  show(ui.toggle, state.enabled); // switching off for this user: no selector (SPEC F10)
  if (!state.enabled) ui.panel.hidden = true;
  const tabbable = state.focused || active?.tier || state.tiers[0]?.tier;
  const existing = new Map([...ui.group.children].map((node) => [node.dataset.tier, node]));
  const nodes = state.tiers.map((tier) => {
    const node = existing.get(tier.tier) || document.createElement("div");
    paintOption(node, tier, { switching: state.switching === tier.tier, tabbable: tier.tier === tabbable });
    return node;
  });
  // Re-inserting a node would take focus away from it: only reorder when needed.
  if (nodes.length !== ui.group.children.length || nodes.some((n, i) => ui.group.children[i] !== n)) {
    ui.group.replaceChildren(...nodes);
  }
  ui.group.setAttribute("aria-busy", String(Boolean(state.switching)));
}

// The in-place message under the tier bar: an error in words, or nothing.
// ``until`` (ms since the epoch) clears it when it stops being true, e.g. a rate limit's wait.
export function setTierMessage(text, { fromPoll = false, until = null } = {}) {
  messageFromPoll = fromPoll && Boolean(text);
  clearAfter(state.ui.error, text, until);
}

// The loading state of a switch: what is happening and for how long.
export function setProgress(text, started = Date.now()) {
  const { progress, progressText, progressTime } = state.ui;
  clearInterval(progressTimer);
  show(progress, Boolean(text));
  if (!text) return;
  if (progressText.textContent !== text) progressText.textContent = text;
  const tick = () => { progressTime.textContent = `${Math.floor((Date.now() - started) / 1000)} s`; };
  tick();
  progressTimer = setInterval(tick, 1000);
}

export function startPolling() {
  reschedule();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  // "Out of date" stops being true the moment Kynsey answers anything: say so, and catch up.
  api.onSuccess(() => {
    if (!messageFromPoll) return;
    setTierMessage("");
    poll();
  });
}

export function reschedule() {
  clearTimeout(pollTimer);
  const warming = state.tiers.some((t) => t.status === "warming");
  pollTimer = setTimeout(poll, warming ? FAST_POLL_MS : POLL_MS);
}

export async function poll() {
  try {
    if (!document.hidden) await refreshTiers();
  } catch (err) {
    if (err.status !== 401) setTierMessage(`Tier status is out of date. ${describeError(err)}`, { fromPoll: true });
  } finally {
    reschedule();
  }
}
