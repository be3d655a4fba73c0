// Users on the admin page, from creation to removal (SPEC F21): add, plan, password reset,
// disable/enable, admin on/off, API tokens, log out everywhere, delete. Each button is one
// call to /api/admin/users...; the server holds the rules (e.g. the last admin stays).

import * as api from "./api.js";
import { el } from "./dom.js";
import { ask, field, say } from "./admin-ui.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);
let afterChange = async () => {};

export async function initUsers(onChange) {
  afterChange = onChange;
  $("createUser").addEventListener("submit", createUser);
  return loadUsers();
}

export async function loadUsers() {
  try {
    const { users, plans } = await api.listUsers();
    const chosen = $("newPlan").value; // keep what someone filling the form picked
    $("newPlan").replaceChildren(...plans.map((plan) => el("option", { value: plan, selected: plan === chosen }, plan)));
    $("usersTable").tBodies[0].replaceChildren(...users.map((user) => userRow(user, plans)));
  } catch (err) {
    notice(`Couldn't load the users. ${describeError(err)}`, true);
  }
}

const notice = (text, isError = false) => say($("usersNotice"), text, isError);

async function changed(text, focusId = null) {
  notice(text);
  await loadUsers();
  if (focusId) $(focusId)?.focus(); // the row was redrawn: keep the keyboard user in place
  await afterChange();
}

async function createUser(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const body = { name: data.get("name").trim(), plan: data.get("plan"), admin: data.get("admin") === "on", password: data.get("password") || null };
  try {
    const user = await api.createUser(body);
    form.reset();
    await changed(`Added ${user.name} on the ${user.plan} plan${user.is_admin ? " as an admin" : ""}.`);
  } catch (err) {
    notice(`Couldn't add ${body.name}. ${describeError(err)}`, true);
  }
}

function userRow(user, plans) {
  const id = `plan-${user.name}`;
  const missing = !plans.includes(user.plan);
  const options = [...(missing ? [user.plan] : []), ...plans];
  const select = el("select", { id }, ...options.map((plan) => el("option", { value: plan, selected: plan === user.plan }, plan)));
  const save = el("button", { type: "button", "aria-label": `Save the plan for ${user.name}` }, "Save");
  save.addEventListener("click", () => savePlan(user, select, save));
  return el("tr", { "data-user": user.name, class: user.disabled ? "is-disabled" : null },
    el("th", { scope: "row" }, user.name),
    el("td", {}, user.is_admin ? "admin" : "user"),
    el("td", { class: user.disabled ? "state-disabled" : null }, user.disabled ? "disabled" : "active"),
    el("td", {}, user.active_tier),
    el("td", {},
      el("div", { class: "plan-control" }, el("label", { for: id, class: "visually-hidden" }, `Plan for ${user.name}`), select, save),
      missing ? el("span", { class: "plan-missing" }, `The catalog has no ${user.plan} plan: no tier is open to ${user.name} until moved.`) : null),
    el("td", { class: "account" }, accountActions(user)),
  );
}

function accountActions(user) {
  const button = (label, text, action, attrs = {}) =>
    el("button", { type: "button", id: `${action.name}-${user.name}`, "aria-label": `${label} ${user.name}`, ...attrs, onclick: () => action(user) }, text);
  return el("div", { class: "account-actions" },
    button("Reset the password of", "Reset password", resetPassword),
    button(user.disabled ? "Enable" : "Disable", user.disabled ? "Enable" : "Disable", toggleDisabled),
    button(user.is_admin ? "Remove admin from" : "Make admin", user.is_admin ? "Remove admin" : "Make admin", toggleAdmin),
    button("API tokens of", `Tokens (${user.tokens})`, showTokens),
    button("Log out everywhere", "Log out everywhere", logOutEverywhere),
    button("Delete", "Delete", deleteUser, { class: "danger" }),
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
    await changed(`${updated.name} is now on the ${updated.plan} plan.`, `plan-${user.name}`);
  } catch (err) {
    notice(`Couldn't change ${user.name}'s plan. ${describeError(err)}`, true);
    button.disabled = false;
  }
}

// Run one account call; say what happened, or why it did not.
async function act(user, call, done, focusId) {
  try {
    await changed(done(await call()), focusId);
  } catch (err) {
    notice(`Couldn't change ${user.name}. ${describeError(err)}`, true);
  }
}

async function resetPassword(user) {
  await ask({
    title: `New password for ${user.name}`,
    body: [field("New password", { name: "password", type: "password", required: true, minlength: 8, maxlength: 1024, autocomplete: "new-password" }),
      el("p", { class: "hint" }, `At least 8 characters. ${user.name}'s browser sessions end; API tokens keep working.`)],
    ok: "Set password",
    act: async (form) => {
      await api.resetPassword(user.name, form.elements.password.value).catch(failIn);
      await changed(`${user.name}'s password is set; their browser sessions ended.`);
    },
  });
}

const failIn = (err) => { throw new Error(describeError(err)); };

function toggleDisabled(user) {
  const disabled = !user.disabled;
  return act(user, () => api.setDisabled(user.name, disabled),
    () => disabled ? `${user.name} is disabled: no login, tokens refused, sessions ended.` : `${user.name} is enabled again.`,
    `toggleDisabled-${user.name}`);
}

function toggleAdmin(user) {
  const admin = !user.is_admin;
  return act(user, () => api.setAdmin(user.name, admin),
    () => admin ? `${user.name} is now an admin.` : `${user.name} is no longer an admin.`, `toggleAdmin-${user.name}`);
}

async function logOutEverywhere(user) {
  const tokens = el("input", { type: "checkbox", id: "dialog-tokens", name: "tokens" });
  await ask({
    title: `Log ${user.name} out everywhere?`,
    body: [el("p", {}, `Every browser session of ${user.name} ends at its next request.`),
      el("label", { class: "check", for: "dialog-tokens" }, tokens, `Also revoke ${user.name}'s ${user.tokens} API token(s)`)],
    ok: "Log out everywhere",
    act: async () => {
      const removed = await api.logOutEverywhere(user.name, tokens.checked).catch(failIn);
      await changed(`${user.name}: ${removed.sessions} browser session(s) ended, ${removed.tokens} API token(s) revoked.`);
    },
  });
}

async function deleteUser(user) {
  await ask({
    title: `Delete ${user.name}?`,
    body: [el("p", {}, `${user.name}'s conversations, API tokens and sessions are deleted with the account. `
      + "The audit log keeps its entries. This cannot be undone.")],
    ok: `Delete ${user.name}`,
    danger: true,
    act: async () => {
      const removed = await api.deleteUser(user.name).catch(failIn);
      await changed(`Deleted ${user.name} with ${removed.conversations} conversation(s) and ${removed.tokens} API token(s).`);
    },
  });
}

async function showTokens(user) {
  const list = el("div", {});
  const draw = async () => {
    const { tokens } = await api.listTokens(user.name);
    list.replaceChildren(tokens.length ? tokenTable(user, tokens, draw) : el("p", {}, `${user.name} has no API tokens.`));
  };
  await draw().catch((err) => list.replaceChildren(el("p", { class: "error" }, describeError(err))));
  await ask({ title: `API tokens of ${user.name}`, body: [list, el("p", { class: "hint" }, "New tokens are made with: kynsey user token NAME")], ok: null });
  await loadUsers();
}

function tokenTable(user, tokens, redraw) {
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
  const revoke = (token) => el("button", {
    type: "button", class: "danger", "aria-label": `Revoke token ${token.id}${token.name ? ` (${token.name})` : ""}`,
    onclick: async () => {
      await api.revokeToken(user.name, token.id);
      await redraw();
      await afterChange();
    },
  }, "Revoke");
  return el("table", { class: "data" },
    el("thead", {}, el("tr", {}, ...["Id", "Name", "Created", "Last used", "Expires", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...tokens.map((t) => el("tr", { "data-token": t.id },
      el("td", {}, String(t.id)), el("td", {}, t.name || "-"), el("td", {}, when(t.created_at)),
      el("td", {}, when(t.last_used_at)), el("td", {}, t.expired ? `${when(t.expires_at)} (expired)` : when(t.expires_at)),
      el("td", {}, revoke(t))))),
  );
}
