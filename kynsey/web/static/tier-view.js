// How a tier looks: its status dot, its option in the selector, the active model display.

import { el, fill, icon } from "./dom.js";
import { statusWords, unavailableAdvice, UNAVAILABLE } from "./words.js";

// A coloured dot with its meaning on hover (title) and in words for screen readers.
export function statusBadge(status) {
  const { label, meaning } = statusWords(status);
  return el(
    "span",
    { class: `status status-${status}`, title: `${label}: ${meaning}` },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { class: "status-label" }, label),
    el("span", { class: "visually-hidden" }, ` (${meaning})`),
  );
}

export function isSelectable(tier) {
  return tier.allowed && !UNAVAILABLE.has(tier.status);
}

function badges(tier) {
  return [
    tier.active ? el("span", { class: "badge badge-active" }, icon("check"), "Active") : null,
    tier.allowed ? null : el("span", { class: "badge badge-locked" }, icon("lock"), "Locked"),
  ];
}

function note(tier, switching, id) {
  if (switching) {
    return el("span", { class: "tier-note note-busy", id }, el("span", { class: "spinner", "aria-hidden": "true" }), "Switching…");
  }
  if (!tier.allowed) {
    const text = tier.upgrade?.message || "Your plan does not include this tier.";
    return el("span", { class: "tier-note note-upgrade", id }, icon("lock"), text);
  }
  if (UNAVAILABLE.has(tier.status)) {
    const text = `Unavailable: ${tier.status_reason || statusWords(tier.status).meaning}. ${unavailableAdvice(tier.status)}`;
    return el("span", { class: "tier-note note-unavailable", id }, icon("alert"), text);
  }
  return null;
}

// Fill a role="radio" node for ``tier``; the node itself is kept so focus stays on it.
export function paintOption(node, tier, { switching = false, tabbable = false } = {}) {
  const id = `tier-${tier.tier}`;
  const noteNode = note(tier, switching, `${id}-note`);
  node.id = id;
  node.dataset.tier = tier.tier;
  node.className = ["tier-option", tier.active && "is-active", !tier.allowed && "is-locked",
    UNAVAILABLE.has(tier.status) && "is-unavailable", switching && "is-switching"].filter(Boolean).join(" ");
  node.setAttribute("role", "radio");
  node.setAttribute("aria-checked", String(Boolean(tier.active)));
  node.setAttribute("aria-disabled", String(!isSelectable(tier)));
  node.setAttribute("aria-labelledby", `${id}-head`);
  node.setAttribute("aria-describedby", [`${id}-desc`, noteNode && `${id}-note`].filter(Boolean).join(" "));
  node.tabIndex = tabbable ? 0 : -1;
  fill(
    node,
    el("span", { class: "tier-head", id: `${id}-head` },
      el("span", { class: "tier-name" }, tier.display_name), ...badges(tier), statusBadge(tier.status)),
    el("span", { class: "tier-desc", id: `${id}-desc` }, tier.description,
      el("span", { class: "tier-model" }, ` · ${tier.model_id}`)),
    noteNode,
  );
}

export function paintActive(node, tier) {
  fill(
    node,
    el("span", { class: "active-label" }, "Currently using: "),
    el("strong", { class: "active-name" }, tier.display_name),
    " ",
    el("code", { class: "active-model", title: tier.internal_name }, tier.model_id),
    " ",
    statusBadge(tier.status),
  );
}
