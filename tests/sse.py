"""Read server-sent events from an httpx streaming response."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx


def events(resp: httpx.Response) -> Iterator[tuple[str, dict]]:
    name, data = None, []
    for line in resp.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and name is not None:
            yield name, json.loads("\n".join(data)) if data else {}
            name, data = None, []


def collect(client: httpx.Client, method: str, url: str, **kwargs) -> list[tuple[str, dict]]:
    with client.stream(method, url, **kwargs) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return list(events(resp))


def text_of(evts: list[tuple[str, dict]]) -> str:
    return "".join(d["text"] for name, d in evts if name == "delta")
