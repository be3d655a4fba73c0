"""Logs that carry the request id while a request is handled, in one of two shapes.

- ``text``: one readable line, ``12:00:01.234 INFO  kynsey.chat  message  key=value ...``,
  for a person at a terminal;
- ``json``: one JSON object a line, for a log collector.

``KYNSEY_LOG_FORMAT=auto`` (the default) picks text when standard error is a
terminal and JSON otherwise (a service manager, a pipe, a file).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

# Set by the web app's EdgeMiddleware for the life of one request (tasks it starts inherit it).
request_id_var: ContextVar[str | None] = ContextVar("kynsey_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamp every record emitted while handling a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def _extra(record: logging.LogRecord) -> dict:
    """The fields a caller added with ``extra=`` (and the request id)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extra(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A line a person reads: local time, level, logger, message, then any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        line = f"{when} {record.levelname:<7} {record.name}  {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def pick_format(setting: str, stream: TextIO) -> str:
    if setting != "auto":
        return setting
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(level: str = "INFO", log_format: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if pick_format(log_format, stream) == "text" else JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
