// Read a text/event-stream body (from fetch, so it can be a POST) and hand
// each event to onEvent(name, data). Data is parsed as JSON when it is JSON.

export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = dispatchComplete(normalise(buffer + value), onEvent);
  }
}

// CRLF and CR become LF; a CR at the very end may be half of a CRLF, so it waits.
function normalise(text) {
  const keep = text.endsWith("\r") ? 1 : 0;
  const head = text.slice(0, text.length - keep).replace(/\r\n?/g, "\n");
  return head + text.slice(text.length - keep);
}

function dispatchComplete(buffer, onEvent) {
  let boundary = buffer.indexOf("\n\n");
  while (boundary >= 0) {
    const event = parseBlock(buffer.slice(0, boundary));
    buffer = buffer.slice(boundary + 2);
    if (event) onEvent(event.name, event.data);
    boundary = buffer.indexOf("\n\n");
  }
  return buffer;
}

function parseBlock(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  try {
    return { name, data: JSON.parse(text) };
  } catch {
    return { name, data: text };
  }
}
