"""Log setup: one JSON object per line (or plain text), with trace ids and a keyed user hash.

Records never carry message text; the user of the actor that logged is written as a short
HMAC of its id with a per-deployment salt (`BUTLER_LOG_SALT`, random per process if unset), so
one user's lines can be followed without the id appearing in the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from actors.user_actor import current_user
from adapters.observability.redaction import RedactingFilter

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_KEYS = frozenset({"text", "content", "message_text", "token", "api_key", "user_id"})


def user_hash(user_id: str, salt: bytes) -> str:
    """A short keyed hash of `user_id` (12 hex characters): stable per salt, not reversible."""
    return hmac.new(salt, user_id.encode(), hashlib.sha256).hexdigest()[:12]


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, trace and user."""

    def __init__(self, salt: bytes) -> None:
        super().__init__()
        self._salt = salt

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            line["trace_id"] = format(ctx.trace_id, "032x")
            line["span_id"] = format(ctx.span_id, "016x")
        user = current_user.get()
        if user:
            line["user"] = user_hash(user, self._salt)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _SECRET_KEYS and key not in line:
                line[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
            line["stack"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(
    *, level: str, fmt: str, salt: str = "", stream: TextIO | None = None
) -> logging.Handler:
    """Install one stderr handler, with the redaction filter on it, on the root logger.

    Args:
        level: a `logging` level name.
        fmt: `json` (one object per line) or `text`.
        salt: key of the user hash; random per process when empty (hashes then differ
            between restarts).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        key = salt.encode() if salt else secrets.token_bytes(16)
        handler.setFormatter(JsonFormatter(key))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())  # part of the handler: replaced with it, never lost
    handler.set_name("butler")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "butler"]:
        root.removeHandler(old)  # configured again: replace ours, keep anyone else's
    root.addHandler(handler)
    root.setLevel(level)
    return handler
