"""Database work repeated for the life of the runtime, that outlives a database outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError


async def every(seconds: float, work: Callable[[], Awaitable[Any]], what: str, log: logging.Logger) -> None:
    """Run ``work`` now and then every ``seconds``, for ever. A passing database outage is said
    once (and its end once) on ``log``; anything else is a bug, logged with its traceback; the
    loop goes on either way."""
    failing_since: float | None = None
    while True:
        try:
            await work()
            if failing_since is not None:
                log.warning("%s works again after %.1f s", what, time.monotonic() - failing_since)
                failing_since = None
        except SQLAlchemyError as exc:  # a passing database outage: keep going, say it once
            if failing_since is None:
                failing_since = time.monotonic()
                log.error("%s failed (retrying every %.2f s): %s", what, seconds, exc)
        except Exception:  # anything else is a bug: log it loudly, keep the loop alive
            log.exception("%s failed", what)
        await asyncio.sleep(seconds)
