// Choosing a tier: the plan's flowchart seen from the page. Locked -> the
// upgrade card; unavailable -> why; else switch, showing the loading state
// until the model is ready (a 202 "warming" is polled until then).

import { ApiError, setModelTier } from "./api.js";
import { announce } from "./dom.js";
import { hideUpgrade, showUpgrade } from "./upgrade.js";
import { findTier, refreshTiers, renderTiers, setProgress, setTierMessage, state } from "./tiers.js";
import { describeError, UNAVAILABLE, unavailableAdvice } from "./words.js";

const WARM_POLL_MS = 1000;
const WARM_LIMIT_MS = 10 * 60 * 1000;

// True when the chosen tier is now the active one.
export async function chooseTier(slug) {
  const tier = findTier(slug);
  if (!tier || state.switching) return false;
  setTierMessage("");
  hideUpgrade();
  if (!tier.allowed) {
    showUpgrade(tier); // an offer, not an error
    return false;
  }
  if (UNAVAILABLE.has(tier.status)) {
    setTierMessage(`${tier.display_name} can't be used right now: ${tier.status_reason}. ${unavailableAdvice(tier.status)}`);
    return false;
  }
  if (tier.active) {
    announce(`Already using ${tier.display_name}.`);
    return true;
  }
  return switchTo(tier);
}

async function switchTo(tier) {
  const started = Date.now();
  state.switching = tier.tier;
  renderTiers();
  setProgress(`Switching to ${tier.display_name}: getting its model ready…`, started);
  try {
    const result = await setModelTier(tier.tier);
    if (result.status === "warming") await waitUntilReady(tier, started);
    await refreshTiers();
    announce(`Now using ${result.display_name} (${result.model_id}).`);
    return true;
  } catch (err) {
    const until = err.retryAfter ? Date.now() + err.retryAfter * 1000 : null;
    setTierMessage(describeError(err, { action: "switch", tierName: tier.display_name }), { until });
    refreshTiers().catch(() => {});
    return false;
  } finally {
    state.switching = null;
    setProgress(null);
    renderTiers();
  }
}

async function waitUntilReady(tier, started) {
  setProgress(`${tier.display_name} is warming up: loading its model into memory…`, started);
  await refreshTiers();
  while (Date.now() - started < WARM_LIMIT_MS) {
    const now = findTier(tier.tier);
    if (!now || now.status === "ready") return;
    if (UNAVAILABLE.has(now.status)) throw new ApiError(503, { code: "tier_unavailable", tier_status: now.status });
    await new Promise((resolve) => setTimeout(resolve, WARM_POLL_MS));
    await refreshTiers();
  }
  throw new ApiError(0, { code: "still_warming" });
}
