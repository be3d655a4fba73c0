// The admin page: users and their plans (change one: audited), the audit log
// (admin-audit.js) and the operations dashboard (#dashboard, dashboard.js).

import * as api from "./api.js";
import { el, show } from "./dom.js";
import { initAudit, reloadAudit } from "./admin-audit.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);

async function boot() {
  let session;
  try {
    session = await api.me();
  } catch (err) {
    refuse(err.status === 401 ? "You are not logged in. Log in on the chat page, then come back." : describeError(err));
    return;
  }
  $("userName").textContent = session.user.name;
  if (!session.user.is_admin) {
    refuse("This page is for admins, and your account is not one. Ask an admin if you need access.");
    return;
  }
  show($("usersSection"), true);
  show($("auditSection"), true);
  await loadUsers();
  await initAudit();
}

function refuse(text) {
  $("adminError").replaceChildren(text, " ", el("a", { href: "/" }, "Go to the chat page"));
  show($("adminError"), true);
}

async function loadUsers() {
  try {
    const { users, plans } = await api.listUsers();
    $("usersTable").tBodies[0].replaceChildren(...users.map((user) => userRow(user, plans)));
  } catch (err) {
    notice(`Couldn't load the users. ${describeError(err)}`, true);
  }
}

function userRow(user, plans) {
  const id = `plan-${user.name}`;
  const select = el("select", { id }, ...plans.map((plan) => el("option", { value: plan, selected: plan === user.plan }, plan)));
  const save = el("button", { type: "button", "aria-label": `Save the plan for ${user.name}` }, "Save");
  save.addEventListener("click", () => savePlan(user, select, save));
  return el("tr", { "data-user": user.name },
    el("th", { scope: "row" }, user.name),
    el("td", {}, user.is_admin ? "admin" : "user"),
    el("td", {}, user.active_tier),
    el("td", {}, el("div", { class: "plan-control" },
      el("label", { for: id, class: "visually-hidden" }, `Plan for ${user.name}`), select, save)),
  );
}

async function savePlan(user, select, button) {
  if (select.value === user.plan) {
    notice(`${user.name} is already on the ${user.plan} plan.`);
    return;
  }
  button.disabled = true;
  try {
    const updated = await api.changePlan(user.name, select.value);
    notice(`${updated.name} is now on the ${updated.plan} plan.`);
    await loadUsers();
    $(`plan-${user.name}`)?.focus(); // the row was redrawn: keep the keyboard user in place
    await reloadAudit();
  } catch (err) {
    notice(`Couldn't change ${user.name}'s plan. ${describeError(err)}`, true);
    button.disabled = false;
  }
}

function notice(text, isError = false) {
  const node = $("usersNotice");
  node.textContent = text;
  node.className = isError ? "error" : "notice";
  show(node, true);
}

boot();
