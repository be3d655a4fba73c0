// The upgrade prompt as an offer (SPEC F19): choosing a tier the plan lacks opens
// a calm card that names what the plan adds, lets the user request it, and shows
// the request's state (pending, declined, approved) as an admin decides.

import * as api from "./api.js";
import { announce, el, fill, icon } from "./dom.js";
import { findTier, onTiersChange, state } from "./tiers.js";
import { describeError } from "./words.js";

// What the card shows: the tier that was chosen, the plan that unlocks it, what
// that plan adds, and the newest request for it (null: none; undefined: not known yet).
const card = { node: null, tier: null, plan: null, adds: [], request: undefined, note: "", busy: false };
let hooks = { onSwitch: () => {}, onClose: () => {} };

const planName = (slug) => (slug ? slug[0].toUpperCase() + slug.slice(1) : "");
const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "an earlier date");

// hooks: onSwitch(slug) switches to a tier that is now allowed; onClose() after "Not now".
export function initUpgradeCard(node, given) {
  card.node = node;
  hooks = given;
  onTiersChange(() => {
    if (node.hidden) return;
    if (card.request?.status === "pending") loadRequest(); // the admin may have answered
    else paint();
  });
}

export const upgradeOpen = () => !card.node.hidden;

export function showUpgrade(tier) {
  const plan = tier.upgrade?.unlock_plans?.[0] || null;
  Object.assign(card, { tier: tier.tier, plan, request: undefined, note: "", busy: false });
  card.adds = state.tiers.filter((t) => !t.allowed && t.upgrade?.unlock_plans?.includes(plan));
  card.node.hidden = false;
  paint();
  card.node.querySelector("button:not(:disabled)")?.focus();
  loadRequest();
}

export function hideUpgrade() {
  card.node.hidden = true;
}

async function loadRequest() {
  try {
    const { requests } = await api.listUpgradeRequests();
    card.request = requests.find((r) => r.plan === card.plan) || null;
    card.note = "";
  } catch (err) {
    card.request = null;
    card.note = err.status === 404 && err.code === "not_found" ? unsupported() : describeError(err);
  }
  paint();
}

async function request() {
  card.busy = true;
  paint();
  try {
    card.request = await api.requestUpgrade(card.plan);
    card.note = "";
    announce(`Requested the ${planName(card.plan)} plan.`);
  } catch (err) {
    if (err.status === 409) return loadRequest(); // one is pending already: show it
    card.note = err.status === 404 && err.code === "not_found" ? unsupported() : describeError(err);
  } finally {
    card.busy = false;
  }
  paint();
}

const unsupported = () => "This server does not take upgrade requests yet. Ask an admin to change your plan.";

// Repaint in place; a button that had focus keeps it (by its role), else the title takes it.
function paint() {
  const focused = card.node.contains(document.activeElement) ? document.activeElement.dataset.role || "title" : null;
  const tier = findTier(card.tier);
  const plan = planName(card.plan);
  const unlocked = Boolean(tier?.allowed);
  fill(card.node,
    el("h2", { id: "upgradeTitle", class: "upgrade-title", tabindex: "-1" }, icon(unlocked ? "check" : "lock"),
      unlocked ? `${tier.display_name} is now part of your plan` : `${tier?.display_name || card.tier} comes with the ${plan} plan`),
    unlocked ? null : el("p", {}, `You are on the ${planName(state.plan)} plan. The ${plan} plan adds:`),
    unlocked ? null : el("ul", { class: "upgrade-adds" }, card.adds.map((t) =>
      el("li", {}, el("strong", {}, t.display_name), t.description ? ` - ${t.description}` : ""))),
    el("p", { class: "upgrade-state", role: "status" }, stateText(unlocked)),
    el("div", { class: "upgrade-actions" }, mainButton(unlocked, tier),
      el("button", { type: "button", class: "quiet", "data-role": "close", onclick: close }, unlocked ? "Close" : "Not now")),
  );
  if (focused) {
    const again = card.node.querySelector(`[data-role="${focused}"]:not(:disabled)`) || card.node.querySelector("h2");
    again.focus();
  }
}

function stateText(unlocked) {
  const r = card.request;
  if (unlocked) return r?.status === "approved" ? `An admin approved your request on ${when(r.decided_at)}.` : "";
  if (card.note) return card.note;
  if (r === undefined) return "Checking for an earlier request…";
  if (!r) return "An admin reviews each request; this card shows their answer.";
  if (r.status === "pending") return `You asked for the ${planName(r.plan)} plan on ${when(r.created_at)}. An admin will approve or decline it.`;
  if (r.status === "declined") return `An admin declined your request of ${when(r.created_at)}. You can ask again.`;
  if (r.status === "approved") return `An admin approved your request on ${when(r.decided_at)}; your plan changes in a moment.`;
  return `Your request is ${r.status}.`;
}

function mainButton(unlocked, tier) {
  if (unlocked) {
    return el("button", { type: "button", class: "primary", "data-role": "main", onclick: () => { hideUpgrade(); hooks.onSwitch(tier.tier); } },
      `Switch to ${tier.display_name}`);
  }
  const r = card.request;
  if (card.note === unsupported()) return null;
  const pending = r?.status === "pending";
  const label = pending ? "Requested" : r?.status === "declined" ? "Request again" : "Request upgrade";
  return el("button", {
    type: "button", class: "primary", "data-role": "main", onclick: request,
    disabled: pending || card.busy || !card.plan,
    "aria-describedby": "upgradeTitle",
  }, label);
}

function close() {
  const hadFocus = card.node.contains(document.activeElement);
  hideUpgrade();
  if (hadFocus) hooks.onClose();
}
