// The admin page's operations dashboard (SPEC F10-F12): switch traffic, the
// switch error rate against the guard's line, time to first token per model,
// the model_switching flag with its controls, and the kill-switch banner.
// No build step: charts are drawn on <canvas> by hand.

import * as api from "./api.js";
import { el } from "./dom.js";

const REFRESH_MS = 15000;
// Colours are style.css's variables (light and dark), named here and read when a chart is drawn.
const COLORS = ["chart-1", "chart-2", "chart-3", "chart-4", "chart-5", "chart-6", "chart-7", "chart-8"];
const RESULT_COLORS = {
  ready: "ready", unchanged: "missing", warming: "warming", failed: "unreachable", unavailable: "degraded",
  error: "chart-error", denied: "chart-4", rate_limited: "chart-7", unknown_tier: "chart-8", feature_disabled: "chart-6",
};
let section = null;
let redraws = []; // the charts shown, drawn again when the theme changes

const colour = (name) => getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();

const pct = (x, digits = 1) => (x === null || x === undefined ? "-" : `${(x * 100).toFixed(digits)}%`);
const ms = (x) => (x === null || x === undefined ? "-" : `${Math.round(x)} ms`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
const hhmm = (minute) => minute.slice(11, 16);

// -- charts --------------------------------------------------------------------------
// series: [{name, color (a variable's name), values: (number|null)[]}]; options: {format, threshold: {value, label}}
function drawChart(canvas, minutes, series, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = canvas.clientHeight || 180;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 12, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const values = options.bars
    ? minutes.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0))
    : series.flatMap((s) => s.values.filter((v) => v !== null));
  if (options.threshold) values.push(options.threshold.value * 1.5);
  let top = Math.max(...values, options.min || 0) || 1;
  if (options.integer) top = Math.max(4, Math.ceil(top / 4) * 4); // whole-number gridlines
  const x = (i) => pad.left + (minutes.length < 2 ? 0 : (i / (minutes.length - 1)) * plotW);
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const format = options.format || ((v) => String(Math.round(v)));

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = colour("muted");
  ctx.strokeStyle = colour("border");
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, y(v));
    ctx.lineTo(pad.left + plotW, y(v));
    ctx.stroke();
    ctx.fillText(format(v), 4, y(v) + 4);
  }
  minutes.forEach((m, i) => {
    if (i % 10 === 0) ctx.fillText(hhmm(m), Math.min(x(i) - 14, width - 32), height - 6);
  });
  if (options.threshold) {
    ctx.save();
    ctx.strokeStyle = colour("unreachable");
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    ctx.moveTo(pad.left, y(options.threshold.value));
    ctx.lineTo(pad.left + plotW, y(options.threshold.value));
    ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(options.threshold.label, pad.left + plotW - 90, y(options.threshold.value) - 4);
    ctx.restore();
  }
  if (options.bars) {
    drawBars(ctx, minutes, series, x, y, plotW);
    return;
  }
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = colour(s.color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
      drawing = true;
    });
    ctx.stroke();
    s.values.forEach((v, i) => {
      if (v !== null) ctx.fillRect(x(i) - 1.5, y(v) - 1.5, 3, 3);
    });
  }
}

// Stacked bars: one per minute, a segment per series.
function drawBars(ctx, minutes, series, x, y, plotW) {
  const barW = Math.max(2, plotW / minutes.length - 2);
  minutes.forEach((_, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      ctx.fillStyle = colour(s.color);
      ctx.fillRect(x(i) - barW / 2, y(base + v), barW, y(base) - y(base + v));
      base += v;
    }
  });
}

function chartFigure(title, minutes, series, options, summary) {
  const canvas = el("canvas", { role: "img", "aria-label": `${title}. ${summary}`, class: "dashboard-canvas" });
  const legend = el("ul", { class: "dashboard-legend" });
  for (const s of series) {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = `var(--${s.color})`; // CSSOM, not a style attribute: the CSP allows no inline style
    legend.append(el("li", {}, swatch, ` ${s.name}`));
  }
  if (!series.length) legend.append(el("li", {}, "no data in the last hour"));
  const figure = el("figure", { class: "dashboard-chart" }, el("figcaption", {},
    el("strong", {}, title), el("span", { class: "muted" }, ` ${summary}`)), canvas, legend);
  const draw = () => drawChart(canvas, minutes, series, options);
  redraws.push(draw);
  requestAnimationFrame(draw);
  return figure;
}

const total = (values) => values.reduce((a, v) => a + (v || 0), 0);
const last = (values) => [...values].reverse().find((v) => v !== null && v !== undefined) ?? null;

function charts(data) {
  redraws = [];
  const switchSeries = Object.entries(data.switches).map(([result, values], i) => ({
    name: `${result} (${total(values)})`, color: RESULT_COLORS[result] || COLORS[i % COLORS.length], values,
  }));
  const attempts = total(Object.values(data.switches).flat());
  const rate = last(data.error_rate);
  const ttftSeries = Object.entries(data.ttft_ms).map(([model, values], i) => ({
    name: `${model} (last ${ms(last(values))})`, color: COLORS[i % COLORS.length], values,
  }));
  return el("div", { class: "dashboard-charts" },
    chartFigure("Switches per minute, by result", data.minutes, switchSeries, { bars: true, integer: true },
      `${attempts} switch attempts in the last hour.`),
    chartFigure("Switch error rate per minute", data.minutes,
      [{ name: "error rate (failed + unavailable over valid attempts)", color: "unreachable", values: data.error_rate }],
      { format: (v) => pct(v, 1), threshold: { value: data.error_rate_limit, label: `limit ${pct(data.error_rate_limit, 0)}` }, min: data.error_rate_limit * 2 },
      `Latest minute with switches: ${pct(rate, 2)}; the guard's limit is ${pct(data.error_rate_limit, 0)}.`),
    chartFigure("Time to first token per model (mean per minute)", data.minutes, ttftSeries,
      { format: (v) => `${Math.round(v)} ms`, integer: true }, `${ttftSeries.length} models answered in the last hour.`));
}

// -- flag, banner, guard -------------------------------------------------------------
function banner(data) {
  const flag = data.flag;
  if (!flag.killed || !data.last_rollback) return null;
  const rb = data.last_rollback;
  const back = flag.percent >= 100 ? { state: "on" } : { percent: flag.percent, allow: flag.allow };
  const label = flag.percent >= 100 ? "Turn switching back on" : `Turn switching back on for ${flag.percent}%`;
  return el("div", { class: "error dashboard-banner", role: "alert" },
    el("strong", {}, `Kill switch: switching was rolled back automatically at ${when(rb.at)}. `),
    el("span", {}, `${rb.reason}. Everyone is on the default tier until an admin turns switching back on.`),
    el("div", {}, el("button", { type: "button", class: "primary", onclick: () => saveFlag(back) }, label)));
}

function flagControls(flag) {
  const state = el("select", { id: "flag-state" },
    ...["on", "percentage", "off"].map((s) => el("option", { value: s, selected: flag.state === s }, s)));
  const percent = el("input", { id: "flag-percent", type: "number", min: "0", max: "100", step: "0.01", value: flag.percent });
  const allow = el("input", { id: "flag-allow", type: "text", value: flag.allow.join(", "), placeholder: "alice, bob" });
  const status = el("p", { class: "muted", "aria-live": "polite" });
  const save = () => {
    const body = { allow: allow.value.split(",").map((s) => s.trim()).filter(Boolean) };
    if (state.value === "percentage") body.percent = Number(percent.value);
    else body.state = state.value;
    saveFlag(body, status);
  };
  return el("form", { class: "dashboard-flag", onsubmit: (e) => { e.preventDefault(); save(); } },
    el("p", {}, el("strong", {}, "model_switching: "),
      el("span", {}, flag.enabled ? `on for ${flag.effective_percent}% of users` : "off"),
      el("span", { class: "muted" }, flag.allow.length ? ` (+${flag.allow.length} allowlisted)` : ""),
      el("span", { class: "muted" }, flag.stored ? ` - changed ${when(flag.updated_at)} by ${flag.updated_by}` : " - default")),
    el("label", { for: "flag-state" }, "State "), state, " ",
    el("label", { for: "flag-percent" }, "Percent "), percent, " ",
    el("label", { for: "flag-allow" }, "Allowlist "), allow, " ",
    el("button", { type: "submit", class: "primary" }, "Save flag"), status);
}

function guardFigures(guard) {
  const s = guard.switches;
  const t = guard.ttft;
  return el("p", { class: "muted" },
    `Guard on this instance (${guard.state}): ${s.failures} of ${s.attempts} switch attempts failed in the last `
    + `${s.window_seconds} s (${pct(s.error_rate, 2)}; counts from ${s.min_switches} attempts). `
    + `Time to first token: baseline ${ms(t.baseline_ttft_ms)}, now ${ms(t.current_ttft_ms)} over ${t.replies} replies `
    + `(limit +${pct(t.max_degradation, 0)}).`);
}

function auditTools() {
  const result = el("span", { class: "muted", "aria-live": "polite" });
  const verify = async () => {
    result.textContent = "checking...";
    try { result.textContent = (await api.verifyAudit()).message; }
    catch (err) { result.textContent = err.message; }
  };
  return el("p", {}, el("strong", {}, "Audit trail: "),
    el("a", { href: "/api/admin/audit/export?format=csv", download: "" }, "download CSV"), " · ",
    el("a", { href: "/api/admin/audit/export?format=jsonl", download: "" }, "download JSON lines"), " · ",
    el("button", { type: "button", onclick: verify }, "Verify the hash chain"), " ", result);
}

// -- load and render -----------------------------------------------------------------
async function saveFlag(body, status) {
  try {
    await api.setFlag("model_switching", body);
    if (status) status.textContent = "saved";
    await refresh();
  } catch (err) {
    if (status) status.textContent = `not saved: ${err.message}`;
    else window.alert(`not saved: ${err.message}`);
  }
}

async function refresh() {
  try {
    const data = await api.getDashboard();
    section.replaceChildren(el("h2", {}, "Operations"), banner(data) || "", flagControls(data.flag),
      guardFigures(data.guard), charts(data), auditTools());
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      section.replaceChildren(); // not an admin (admin.js says so): show nothing here
      return;
    }
    section.replaceChildren(el("h2", {}, "Operations"), el("p", { class: "muted" }, `Dashboard unavailable: ${err.message}`));
  }
}

async function start() {
  section = document.getElementById("dashboard");
  if (!section) {
    section = el("section", { id: "dashboard" });
    (document.querySelector("main") || document.body).append(section);
  }
  section.setAttribute("aria-label", "Operations dashboard");
  // api.js keeps the CSRF token that saving the flag needs; not logged in: refresh() shows nothing.
  try { await api.me(); } catch { /* refresh() says so */ }
  await refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  new MutationObserver(() => redraws.forEach((draw) => draw()))
    .observe(document.documentElement, { attributeFilter: ["data-theme"] });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
