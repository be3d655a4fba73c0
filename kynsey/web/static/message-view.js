// One message in the conversation: who wrote it (for replies: the tier and
// model that answered, and a note when a fallback answered), its text, its state.

import { el, fill, icon } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { actionBar, paintActions } from "./message-actions.js";
import { describeError } from "./words.js";

export function messageNode(msg) {
  const node = el("article", { class: `msg msg-${msg.role}` },
    el("header", { class: "msg-meta" }),
    el("div", { class: "msg-body" }),
    el("p", { class: "msg-state", hidden: true }),
    actionBar(msg),
  );
  paintMessage(node, msg);
  return node;
}

export function paintMessage(node, msg) {
  paintMeta(node, msg);
  if (!node.classList.contains("is-editing")) paintBody(node, msg);
  paintState(node, msg);
  paintActions(node, msg);
}

function paintMeta(node, msg) {
  const meta = node.querySelector(".msg-meta");
  if (msg.role === "user") {
    node.setAttribute("aria-label", "You");
    fill(meta, el("span", { class: "who" }, "You"));
    return;
  }
  const name = msg.display_name || msg.tierName || msg.tier || "Kynsey";
  node.setAttribute("aria-label", `Reply from ${name}`);
  fill(
    meta,
    el("span", { class: "who" }, "Kynsey"),
    el("span", { class: "tier-tag" }, name),
    msg.model ? el("code", { class: "msg-model" }, msg.model) : null,
    msg.fallback_from ? fallbackNote(msg, name) : null,
  );
}

function fallbackNote(msg, name) {
  const from = msg.fallbackName || msg.fallback_from;
  const why = msg.fallback_reason ? `: ${msg.fallback_reason}` : "";
  return el("p", { class: "fallback-note" }, icon("alert"), `Answered by ${name} because ${from} could not answer${why}.`);
}

export function paintBody(node, msg) {
  const body = node.querySelector(".msg-body");
  node.setAttribute("aria-busy", String(msg.status === "streaming"));
  if (msg.role === "user") {
    body.textContent = msg.content;
  } else if (msg.content) {
    renderMarkdown(body, msg.content, { streaming: msg.status === "streaming" });
  } else {
    fill(body, msg.status === "streaming" ? typing(msg) : "");
  }
}

function typing(msg) {
  const name = msg.display_name || msg.tierName || "the model";
  return el("span", { class: "typing" }, el("span", { class: "spinner", "aria-hidden": "true" }), `Waiting for ${name}…`);
}

function paintState(node, msg) {
  const line = node.querySelector(".msg-state");
  const text = stateText(msg);
  line.hidden = !text;
  line.className = `msg-state state-${msg.status}`;
  line.textContent = text;
}

function stateText(msg) {
  if (msg.role === "user") return "";
  if (msg.status === "complete") return figures(msg);
  if (msg.status === "stopped") return `Stopped. You stopped this reply; what it wrote is kept. Retry writes a new version.`;
  if (msg.status === "interrupted") return `Interrupted. ${words(msg, "interrupted")}`;
  if (msg.status === "failed") return `No reply. ${words(msg, "failed")}`;
  return "";
}

function words(msg, status) {
  const code = msg.error_code || status;
  const said = describeError({ code, message: msg.error || "", retryAfter: msg.retryAfter }, { action: "reply" });
  const detail = msg.error && !said.includes(msg.error) ? ` (${msg.error})` : "";
  return code === "failed" ? `The reply failed${detail}. Retry to ask again.` : `${said}${detail}`;
}

function figures(msg) {
  const parts = [];
  if (msg.ttft_ms != null) parts.push(`first token ${formatMs(msg.ttft_ms)}`);
  if (msg.tokens != null) parts.push(`${msg.tokens} tokens`);
  if (msg.tokens_per_s != null) parts.push(`${Math.round(msg.tokens_per_s)} tokens/s`);
  if (msg.load_ms) parts.push(`model load ${formatMs(msg.load_ms)}`);
  return parts.join(" · ");
}

const formatMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
