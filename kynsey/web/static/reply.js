// Fold a reply's stream events (start, delta, done, error) into its message
// object, repainting at most once per animation frame.

export async function followReply(msg, run, repaint) {
  let frame = 0;
  const paint = () => {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; repaint(); });
  };
  try {
    await run((name, data) => {
      apply(msg, name, data || {});
      paint();
    });
  } finally {
    cancelAnimationFrame(frame);
    repaint();
  }
}

function apply(msg, name, data) {
  if (name === "start") {
    // A re-attached stream starts over: its first delta is the text so far.
    Object.assign(msg, {
      id: data.message_id,
      tier: data.tier,
      model: data.model,
      display_name: data.display_name || null,
      fallback_from: data.fallback_from || null,
      fallback_reason: data.fallback_reason || null,
      content: "",
      status: "streaming",
    });
  } else if (name === "delta") {
    msg.content += data.text ?? "";
  } else if (name === "done") {
    const { ttft_ms, tokens, tokens_per_s, load_ms } = data;
    Object.assign(msg, { status: "complete", ttft_ms, tokens, tokens_per_s, load_ms });
  } else if (name === "error") {
    Object.assign(msg, { status: msg.content ? "interrupted" : "failed", error: data.message, error_code: data.code });
  }
}
