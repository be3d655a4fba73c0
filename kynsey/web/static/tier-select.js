// The selector's behaviour: open and close, keyboard (arrows, Home/End,
// Enter/Space, Escape), pointer, and warming a cold tier ahead of a click.

import { warmTier } from "./api.js";
import { findTier, renderTiers, reschedule, state } from "./tiers.js";
import { chooseTier } from "./tier-switch.js";
import { upgradeOpen } from "./upgrade.js";

const WARM_AGAIN_MS = 2 * 60 * 1000;
const MOVES = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
const warmedAt = new Map();
let warmPausedUntil = 0;
let warmSupported = true;

export function initSelector() {
  const { ui } = state;
  ui.toggle.addEventListener("click", () => setOpen(ui.panel.hidden));
  ui.panel.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.preventDefault(); // Escape closes the picker; it does not also stop a reply
    setOpen(false);
    ui.toggle.focus();
  });
  ui.group.addEventListener("keydown", onKey);
  ui.group.addEventListener("click", (event) => {
    const option = optionOf(event.target);
    if (option) choose(option);
  });
  ui.group.addEventListener("focusin", (event) => {
    const option = optionOf(event.target);
    if (!option) return;
    state.focused = option.dataset.tier;
    for (const node of state.ui.group.children) node.tabIndex = node === option ? 0 : -1;
    warm(option.dataset.tier);
  });
  ui.group.addEventListener("mouseover", (event) => {
    const option = optionOf(event.target);
    if (option) warm(option.dataset.tier);
  });
}

export function setOpen(open) {
  const { ui } = state;
  ui.panel.hidden = !open;
  ui.toggle.setAttribute("aria-expanded", String(open));
  if (!open) return;
  state.tiers.filter((t) => t.status === "cold").forEach((t) => warm(t.tier));
  const target = ui.group.querySelector('[aria-checked="true"]') || ui.group.querySelector('[role="radio"]');
  target?.focus();
}

const optionOf = (node) => node.closest?.('[role="radio"]');

function onKey(event) {
  const options = [...state.ui.group.querySelectorAll('[role="radio"]')];
  const current = options.indexOf(optionOf(event.target));
  let next;
  if (event.key in MOVES) next = (current + MOVES[event.key] + options.length) % options.length;
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = options.length - 1;
  else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    choose(options[current]);
    return;
  } else return;
  event.preventDefault();
  options[next].focus();
}

async function choose(option) {
  const { ui } = state;
  const switched = await chooseTier(option.dataset.tier);
  if (upgradeOpen()) return setOpen(false); // the upgrade card took focus
  // Close like a select does, unless the user has moved on elsewhere meanwhile.
  if (!switched) return;
  const focusWasHere = ui.panel.contains(document.activeElement) || document.activeElement === document.body;
  setOpen(false);
  if (focusWasHere) ui.toggle.focus();
}

// Ask the server to load a cold tier's model now, so a switch to it is quick.
function warm(slug) {
  const tier = findTier(slug);
  const now = Date.now();
  if (!warmSupported || !tier || tier.status !== "cold" || !tier.allowed || !state.enabled) return;
  if (now < warmPausedUntil || now - (warmedAt.get(slug) || 0) < WARM_AGAIN_MS) return;
  warmedAt.set(slug, now);
  warmTier(slug)
    .then((body) => {
      if (body?.status && findTier(slug)) findTier(slug).status = body.status;
      renderTiers();
      reschedule(); // poll fast while it warms
    })
    .catch((err) => {
      if (err.code === "rate_limited") warmPausedUntil = now + (err.retryAfter || 30) * 1000;
      if (err.status === 404 && err.code !== "unknown_tier") warmSupported = false; // older server
      if (err.status === 405) warmSupported = false;
    });
}
