// The controls under a message: move between its versions (< 2/3 >), copy it,
// edit it (yours), regenerate it from its own tier or another (replies). A reply
// that did not finish (interrupted, failed, stopped) offers Retry instead of
// Regenerate: the same action, from the same tier. The chat sets what they do.

import { copyButton } from "./copy.js";
import { el, icon } from "./dom.js";
import { state as tierState } from "./tiers.js";
import { showUpgrade } from "./upgrade.js";
import { statusWords, UNAVAILABLE } from "./words.js";

const RETRY = new Set(["interrupted", "failed", "stopped"]);
// onVersion(msg, step), onEdit(msg), onRegenerate(msg, tier slug or null), busy(): a reply is being written.
let handlers = { onVersion() {}, onEdit() {}, onRegenerate() {}, busy: () => false };

export function setMessageHandlers(given) {
  handlers = { ...handlers, ...given };
}

// The tier a Retry or a plain Regenerate asks for: the one this reply was asked of (with
// switching off for this user, none: the default tier answers).
const ownTier = (msg) => (tierState.enabled ? msg.fallback_from || msg.tier || null : null);

function act(role, iconName, words, onclick, attrs = {}) {
  return el("button", { type: "button", class: `act act-${role}`, "data-role": role, onclick, ...attrs },
    icon(iconName), el("span", { class: "act-words" }, words));
}

export function actionBar(msg) {
  const mine = msg.role === "user";
  const menuId = `tiers-${Math.random().toString(36).slice(2, 10)}`;
  const bar = el("div", { class: "msg-actions" },
    el("div", { class: "versions", role: "group", hidden: true },
      el("button", { type: "button", class: "act version-prev", "data-role": "prev", "aria-label": "Previous version",
        title: "Previous version", onclick: () => handlers.onVersion(msg, -1) }, icon("prev")),
      el("span", { class: "version-count", "aria-hidden": "true" }),
      el("button", { type: "button", class: "act version-next", "data-role": "next", "aria-label": "Next version",
        title: "Next version", onclick: () => handlers.onVersion(msg, 1) }, icon("next"))),
    copyButton(mine ? "Copy your message as Markdown" : "Copy the reply as Markdown", () => msg.content),
    mine ? act("edit", "edit", "Edit", () => handlers.onEdit(msg), { "aria-label": "Edit your message" }) : null,
    mine ? null : act("regenerate", "redo", "Regenerate", () => handlers.onRegenerate(msg, ownTier(msg))),
    mine ? null : act("tiers", "more", "Other tier", () => toggleMenu(bar, msg),
      { "aria-expanded": "false", "aria-controls": menuId, "aria-label": "Regenerate with another tier" }),
  );
  if (!mine) {
    const menu = el("div", { class: "tier-menu", id: menuId, role: "group", "aria-label": "Regenerate with", hidden: true });
    menu.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault(); // Escape here closes the menu; it does not stop a reply
      event.stopPropagation();
      closeMenu(bar, true);
    });
    bar.append(menu);
  }
  return bar;
}

export function paintActions(node, msg) {
  const bar = node.querySelector(".msg-actions");
  const busy = handlers.busy();
  const ready = Boolean(msg.id) && msg.status !== "streaming";
  bar.hidden = node.classList.contains("is-editing") || msg.status === "streaming" || (!msg.content && !ready);
  const versions = bar.querySelector(".versions");
  versions.hidden = !(msg.versions > 1);
  if (msg.versions > 1) {
    versions.setAttribute("aria-label", `Version ${msg.version} of ${msg.versions}`);
    versions.querySelector(".version-count").textContent = `${msg.version}/${msg.versions}`;
    versions.querySelector(".version-prev").disabled = busy || msg.version <= 1;
    versions.querySelector(".version-next").disabled = busy || msg.version >= msg.versions;
  }
  bar.querySelector(".copy-button").hidden = !msg.content;
  const edit = bar.querySelector(".act-edit");
  if (edit) Object.assign(edit, { hidden: !ready, disabled: busy });
  const regenerate = bar.querySelector(".act-regenerate");
  if (!regenerate) return;
  const retry = RETRY.has(msg.status);
  Object.assign(regenerate, { hidden: !ready, disabled: busy });
  regenerate.querySelector(".act-words").textContent = retry ? "Retry" : "Regenerate";
  const label = retry ? "Retry this reply" : "Regenerate this reply";
  regenerate.setAttribute("aria-label", label);
  regenerate.title = label;
  const others = bar.querySelector(".act-tiers");
  Object.assign(others, { hidden: !ready || !tierState.enabled || tierState.tiers.length < 2, disabled: busy });
  if (busy || others.hidden) closeMenu(bar, false);
}

function toggleMenu(bar, msg) {
  const menu = bar.querySelector(".tier-menu");
  if (!menu.hidden) return closeMenu(bar, true);
  menu.replaceChildren(el("span", { class: "tier-menu-label", "aria-hidden": "true" }, "Regenerate with:"),
    ...tierState.tiers.map((tier) => tierChoice(bar, msg, tier)));
  menu.hidden = false;
  bar.querySelector(".act-tiers").setAttribute("aria-expanded", "true");
  menu.scrollIntoView({ block: "nearest" });
  menu.querySelector("button:not([aria-disabled=true])")?.focus();
}

function tierChoice(bar, msg, tier) {
  const unavailable = tier.allowed && UNAVAILABLE.has(tier.status);
  const own = tier.tier === ownTier(msg);
  const why = !tier.allowed ? " (locked: see how to get it)" : unavailable ? ` (${statusWords(tier.status).label.toLowerCase()})` : "";
  return el("button", {
    type: "button", class: `act tier-choice${tier.allowed ? "" : " is-locked"}`, "data-tier": tier.tier,
    "aria-disabled": unavailable ? "true" : null, "aria-label": `Regenerate with ${tier.display_name}${own ? ", this reply's tier" : ""}${why}`,
    onclick: () => {
      if (unavailable) return;
      closeMenu(bar, false);
      if (tier.allowed) handlers.onRegenerate(msg, tier.tier);
      else showUpgrade(tier);
    },
  }, tier.allowed ? null : icon("lock"), tier.display_name, own ? el("span", { class: "muted" }, " (this reply)") : null);
}

function closeMenu(bar, focusToggle) {
  const menu = bar.querySelector(".tier-menu");
  if (!menu || menu.hidden) return;
  const hadFocus = menu.contains(document.activeElement);
  menu.hidden = true;
  const toggle = bar.querySelector(".act-tiers");
  toggle.setAttribute("aria-expanded", "false");
  if (focusToggle || hadFocus) toggle.focus();
}
