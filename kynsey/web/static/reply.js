// Fold a reply's stream events (start, delta, done, error) into its message
// object, repainting at most once per animation frame, and less often when a
// repaint is costly: a long reply with code takes ~15 ms to render, so repaints
// are spaced by three times their cost and the page keeps two thirds of its time.

const SPACING = 3;

export async function followReply(msg, run, repaint) {
  let frame = 0;
  let timer = 0;
  let cost = 0;
  let last = 0;
  const draw = () => {
    frame = 0;
    const started = performance.now();
    repaint();
    last = performance.now();
    cost = last - started;
  };
  const paint = () => {
    if (frame || timer) return;
    const wait = last + SPACING * cost - performance.now();
    if (wait <= 0) frame = requestAnimationFrame(draw);
    else timer = setTimeout(() => { timer = 0; frame = requestAnimationFrame(draw); }, wait);
  };
  try {
    await run((name, data) => {
      apply(msg, name, data || {});
      paint();
    });
  } finally {
    cancelAnimationFrame(frame);
    clearTimeout(timer);
    repaint();
  }
}

function apply(msg, name, data) {
  if (name === "accepted") {
    Object.assign(msg, { id: data.message_id, asked_id: data.user_message_id });
  } else if (name === "start") {
    // A re-attached stream starts over: its first delta is the text so far.
    Object.assign(msg, {
      id: data.message_id,
      asked_id: data.user_message_id || msg.asked_id,
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
    const status = data.code === "stopped" ? "stopped" : msg.content ? "interrupted" : "failed";
    Object.assign(msg, { status, error: data.message, error_code: data.code });
  }
}
