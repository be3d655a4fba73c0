// The admin page: upgrade requests (admin-upgrades.js), users from creation to removal
// (admin-users.js), the catalog (admin-catalog.js), the audit log (admin-audit.js) and the
// operations dashboard (#dashboard, dashboard.js).

import * as api from "./api.js";
import { el, show } from "./dom.js";
import { initAudit, reloadAudit } from "./admin-audit.js";
import { initCatalog, loadCatalog } from "./admin-catalog.js";
import { initUpgrades, loadUpgrades } from "./admin-upgrades.js";
import { initUsers, loadUsers } from "./admin-users.js";
import { initThemeSwitch } from "./theme-switch.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);

async function boot() {
  initThemeSwitch($("themeToggle"));
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
  for (const id of ["upgradesSection", "usersSection", "catalogSection", "auditSection"]) show($(id), true);
  await initUsers(async () => { await loadUpgrades(); await loadCatalog(); await reloadAudit(); });
  await initUpgrades(async () => { await loadUsers(); await loadCatalog(); await reloadAudit(); });
  await initCatalog(async () => { await loadUsers(); });
  await initAudit();
}

function refuse(text) {
  $("adminError").replaceChildren(text, " ", el("a", { href: "/" }, "Go to the chat page"));
  show($("adminError"), true);
}

boot();
