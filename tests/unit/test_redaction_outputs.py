"""PII never leaves through logs or exported spans (the redacting filter and exporter)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.observability import configure, tracing
from adapters.observability.redaction import RedactingFilter
from adapters.observability.tracing import RedactingExporter, configure_tracing

EMAIL = "ivan.petrov@example.ru"
PHONE = "+7 916 123-45-67"
CARD = "4111 1111 1111 1111"
PASSPORT = "45 06 123456"
SECRETS = (EMAIL, PHONE, CARD, PASSPORT)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    logger = logging.getLogger("butler.tests.redaction")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s %(detail)s"))
    logger.addHandler(handler)
    logger.propagate = False
    handler.addFilter(RedactingFilter())
    yield logger, out
    logger.removeHandler(handler)


def test_configure_twice_keeps_exactly_one_redacting_handler() -> None:
    root = logging.getLogger()
    first, second = io.StringIO(), io.StringIO()
    try:
        configure(level="INFO", stream=first, tracing=False)
        configured = configure(level="INFO", fmt="json", stream=second, tracing=False)
        ours = [h for h in root.handlers if h.get_name() == "butler"]
        assert ours == [configured.handler]
        assert sum(isinstance(f, RedactingFilter) for f in configured.handler.filters) == 1
        logging.getLogger("butler.tests.twice").warning("mail %s", EMAIL)
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "butler"]:
            root.removeHandler(handler)
    assert first.getvalue() == ""
    assert "mail" in second.getvalue()
    assert EMAIL not in second.getvalue()


def test_log_messages_arguments_extras_and_tracebacks_are_redacted(logged) -> None:
    logger, out = logged
    assert sum(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters) == 1
    logger.warning("write to %s or call %s", EMAIL, PHONE, extra={"detail": f"card {CARD}"})
    try:
        raise ValueError(f"bad passport {PASSPORT}")  # noqa: TRY301 - a traceback to log
    except ValueError:
        logger.exception("failed for %s", EMAIL, extra={"detail": "-"})
    text = out.getvalue()
    for secret in SECRETS:
        assert secret not in text
    assert "write to [email] or call [phone] card [card]" in text
    assert "ValueError: bad passport [passport]" in text


def test_records_without_pii_pass_unchanged(logged) -> None:
    logger, out = logged
    logger.warning("turn failed in %s", "idle", extra={"detail": "error_type=Timeout"})
    assert out.getvalue() == "turn failed in idle error_type=Timeout\n"


def test_exported_spans_are_redacted() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("butler.turn") as span:
        span.set_attribute("note", f"mail {EMAIL}")
        span.set_attribute("list", [PHONE, "ok"])
        span.set_attribute("count", 3)
        span.add_event("transition", {"from": "idle", "to": "generating"})
        span.record_exception(RuntimeError(f"card {CARD}"))
        span.set_status(trace.StatusCode.ERROR, f"passport {PASSPORT}")
    (exported,) = memory.get_finished_spans()
    assert exported.attributes == {"note": "mail [email]", "list": ("[phone]", "ok"), "count": 3}
    assert exported.events[0].attributes == {"from": "idle", "to": "generating"}
    exception = exported.events[1].attributes or {}
    assert exception["exception.message"] == "card [card]"
    assert CARD not in str(exception["exception.stacktrace"])
    assert exported.status.description == "passport [passport]"
    assert exported.context == span.get_span_context()
    provider.shutdown()


def test_configured_console_exporter_redacts(monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(trace, "set_tracer_provider", lambda _: None)
    monkeypatch.setattr(tracing, "ConsoleSpanExporter", lambda: ConsoleSpanExporter(out=out))
    provider = configure_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("s") as span:
        span.set_attribute("note", f"call {PHONE}")
    provider.shutdown()
    printed = out.getvalue()
    assert '"note": "call [phone]"' in printed
    assert PHONE not in printed
