"""Observability: logs (with PII redaction), traces and Prometheus metrics.

`configure(...)` is the one call an entry point makes. It installs Butler's log handler with
its redaction filter attached (a second call replaces the handler and its filter together,
so redaction can never be dropped), and, with `tracing=True`, an OpenTelemetry SDK provider
per the standard `OTEL_*` variables. The SDK is imported only then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from adapters.observability.logs import configure_logging

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass(frozen=True, slots=True)
class Observability:
    """What `configure` installed; `shutdown()` flushes spans at exit."""

    handler: logging.Handler
    provider: TracerProvider | None = None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def configure(
    *,
    level: str,
    fmt: str = "text",
    salt: str = "",
    tracing: bool = True,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> Observability:
    """Install logging (redacted) and, with `tracing`, the tracer provider.

    Args:
        level: a `logging` level name for Butler's loggers (aiogram's stay at WARNING or
            above, so a service's INFO log is Butler's own).
        fmt: `text` or `json` (one object per line, trace ids, a keyed user hash).
        salt: the key of the user hash in JSON logs (random per process when empty).
    """
    handler = configure_logging(level=level, fmt=fmt, salt=salt, stream=stream)
    logging.getLogger("aiogram").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    provider = None
    if tracing:
        from adapters.observability.tracing import configure_tracing

        provider = configure_tracing(env)
    return Observability(handler, provider)
