"""Server logs: one JSON object per line on stderr, for server events only.

Decisions are never logged here (that is the audit record's job), so nothing
on the decision path formats a log line. Pass structured fields with
`log.info("message", extra=fields(key=value))`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_FIELDS = "pdp_fields"


def fields(**values: Any) -> dict[str, Any]:
    """The `extra=` argument that attaches structured fields to one log record."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        entry.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in getattr(record, _FIELDS, {}).items())
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
        return f"{line} {extra}" if extra else line


def configure(level: str = "info", fmt: str = "json") -> None:
    """Send the `pdp` loggers to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("pdp")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
