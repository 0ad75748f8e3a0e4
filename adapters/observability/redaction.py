"""PII redaction of log records: `RedactingFilter` sits on Butler's log handler from the
moment `configure` makes it, so an exception message or an extra that carries an e-mail,
a phone or a card number is redacted before it is written. Spans are redacted at export
(`adapters.observability.tracing.RedactingExporter`).
"""

from __future__ import annotations

import logging

from engine.redact import redact

_formatter = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, string extras and traceback with PII redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
