// The audit log on the admin page: filters by user, tier, result and action,
// newest first, older pages on demand.

import { getModelTiers, listAudit } from "./api.js";
import { el, show } from "./dom.js";
import { describeError } from "./words.js";

const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);
let nextBefore = null;

export async function initAudit() {
  const form = $("auditFilters");
  form.addEventListener("submit", (event) => { event.preventDefault(); reloadAudit(); });
  form.addEventListener("reset", () => setTimeout(reloadAudit)); // once the fields are cleared
  $("auditMore").addEventListener("click", () => load(true));
  await fillTiers(form.elements.tier);
  await reloadAudit();
}

async function fillTiers(select) {
  try {
    const { tiers } = await getModelTiers();
    select.append(...tiers.map((t) => el("option", { value: t.tier }, t.display_name)));
  } catch {
    // The tier filter still offers "Any"; the log itself says what went wrong.
  }
}

export function reloadAudit() {
  nextBefore = null;
  return load(false);
}

async function load(more) {
  const body = $("auditTable").tBodies[0];
  const filters = Object.fromEntries(new FormData($("auditFilters")));
  try {
    const page = await listAudit({ ...filters, limit: PAGE_SIZE, before_id: more ? nextBefore : "" });
    const rows = page.entries.map(entryRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    nextBefore = page.next_before_id;
    show($("auditMore"), Boolean(nextBefore));
    $("auditCount").textContent = countText(body.rows.length, Boolean(nextBefore));
  } catch (err) {
    $("auditCount").textContent = `Couldn't load the audit log. ${describeError(err)}`;
  }
}

function countText(shown, more) {
  if (!shown) return "No entries match these filters.";
  return `${shown} ${shown === 1 ? "entry" : "entries"} shown${more ? "; older ones can be loaded." : "."}`;
}

function entryRow(entry) {
  return el("tr", { "data-id": entry.id },
    el("td", {}, el("time", { datetime: entry.at }, entry.at ? new Date(entry.at).toLocaleString() : "")),
    el("td", {}, entry.actor),
    el("td", {}, entry.action),
    el("td", {}, entry.subject ?? ""),
    el("td", {}, change(entry)),
    el("td", { class: `result result-${entry.result}` }, entry.result),
    el("td", {}, entry.reason ?? ""),
    el("td", {}, entry.latency_ms != null ? `${entry.latency_ms.toFixed(1)} ms` : ""),
  );
}

function change(entry) {
  if (entry.from_tier || entry.to_tier) return `${entry.from_tier ?? "?"} → ${entry.to_tier ?? "?"}`;
  const { from, to } = entry.details || {};
  return from !== undefined && to !== undefined && typeof from !== "object" ? `${from} → ${to}` : "";
}
