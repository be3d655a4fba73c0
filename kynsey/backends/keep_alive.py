"""Ollama's ``keep_alive``: how long a model stays in memory after use.

Apart from ``local_models`` (which imports llama.cpp) so that the Ollama API reads it
whether or not the ``local`` extra is installed.
"""

from __future__ import annotations

import re

from kynsey.errors import BackendError

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def keep_alive_seconds(value: str | int | float) -> float | None:
    """Ollama's keep_alive in seconds: None means forever, 0 means unload right after use.

    Accepts numbers (seconds; negative = forever) and Go-style durations such
    as "30m", "10s", "1h30m" or "-1m".
    """
    if isinstance(value, bool):
        raise BackendError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        return None if value < 0 else float(value)
    text = str(value).strip().lower()
    try:
        return keep_alive_seconds(float(text))
    except ValueError:
        pass
    negative = text.startswith("-")
    body = text.lstrip("+-")
    parts = DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise BackendError(f"invalid keep_alive {value!r}: use seconds or a duration like '30m', '10s', '1h'")
    seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    return None if negative else seconds
