// Upgrade requests on the admin page (SPEC F19): pending ones, with Approve and Decline.

import * as api from "./api.js";
import { el, show } from "./dom.js";
import { say } from "./admin-ui.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);
let onDecided = async () => {};

export async function initUpgrades(afterDecision) {
  onDecided = afterDecision;
  await loadUpgrades();
}

export async function loadUpgrades() {
  try {
    const [{ requests }, { users }] = await Promise.all([api.listAllUpgradeRequests("pending"), api.listUsers()]);
    const planOf = Object.fromEntries(users.map((u) => [u.name, u.plan]));
    $("upgradesTable").tBodies[0].replaceChildren(...requests.map((r) => requestRow(r, planOf[r.user])));
    show($("upgradesTable"), requests.length > 0);
    show($("upgradesEmpty"), requests.length === 0);
  } catch (err) {
    say($("upgradesNotice"), `Couldn't load the upgrade requests. ${describeError(err)}`, true);
  }
}

function requestRow(request, currentPlan) {
  const answer = (verdict, label) =>
    el("button", { type: "button", "aria-label": `${label} ${request.user}'s request for ${request.plan}`, onclick: () => decide(request, verdict) }, label);
  return el("tr", { "data-request": request.id },
    el("th", { scope: "row" }, request.user),
    el("td", {}, currentPlan ?? ""),
    el("td", {}, request.plan),
    el("td", {}, request.note ?? ""),
    el("td", {}, el("time", { datetime: request.created_at }, new Date(request.created_at).toLocaleString())),
    el("td", {}, el("div", { class: "answer" }, answer("approve", "Approve"), answer("decline", "Decline"))),
  );
}

async function decide(request, verdict) {
  try {
    const done = await api.decideUpgradeRequest(request.id, verdict);
    const what = done.status === "approved" ? `is now on the ${done.plan} plan` : `keeps their plan (request for ${done.plan} declined)`;
    say($("upgradesNotice"), `${done.user} ${what}.`);
  } catch (err) {
    say($("upgradesNotice"), `Couldn't answer ${request.user}'s request. ${describeError(err)}`, true);
  }
  await loadUpgrades();
  await onDecided();
}
