// The tier catalog on the admin page: which file runs, its plans and who is on each; reload it.

import * as api from "./api.js";
import { el } from "./dom.js";
import { say } from "./admin-ui.js";
import { describeError } from "./words.js";

const $ = (id) => document.getElementById(id);

export async function initCatalog(afterReload) {
  $("catalogReload").addEventListener("click", async () => {
    try {
      const done = await api.reloadCatalog();
      say($("catalogNotice"), `Reloaded ${done.source}: tiers ${done.tiers.join(", ")}.`);
      await afterReload();
    } catch (err) {
      say($("catalogNotice"), `The catalog was not reloaded: ${err.message}`, true);
    }
    await loadCatalog();
  });
  await loadCatalog();
}

export async function loadCatalog() {
  try {
    const view = await api.catalogStatus();
    $("catalogSummary").textContent = `Running ${view.source}; default tier ${view.default_tier}.`;
    const missing = Object.entries(view.users_on_missing_plans || {}).map(([plan, names]) =>
      el("li", { class: "state-disabled" }, `${plan}: not in this catalog, yet ${names.join(", ")} ${names.length === 1 ? "is" : "are"} on it`));
    $("catalogPlans").replaceChildren(
      ...view.plans.map((p) => el("li", {}, `${p.display_name} (${p.plan}): ${p.grants.join(", ")}; ${p.users ?? 0} user(s)`)),
      ...missing,
    );
  } catch (err) {
    $("catalogSummary").textContent = `Couldn't load the catalog. ${describeError(err)}`;
  }
}
