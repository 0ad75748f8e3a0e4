"""OpenTelemetry SDK setup from the standard `OTEL_*` variables.

Only this package touches the SDK; the core uses the OTel API. The OTLP exporter is imported
only when configured, so commands that export nothing never load it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status

from engine.redact import redact


def configure_tracing(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install an SDK tracer provider configured from the standard variables.

    Spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
    endpoint) is set or `OTEL_TRACES_EXPORTER=otlp`; `console` prints them; otherwise spans
    are sampled (per `OTEL_TRACES_SAMPLER`) but not exported, so nothing connects to a
    collector that is not there. `OTEL_SDK_DISABLED=true` leaves the no-op API in place.
    Every exporter is wrapped so PII in attributes and events is redacted before export.

    Returns:
        The provider to shut down at exit, or None when tracing is disabled.
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "butler")})
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER(_ARG)
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").lower()
    has_endpoint = bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(ConsoleSpanExporter())))
    elif exporter_name == "otlp" or (has_endpoint and exporter_name != "none"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(OTLPSpanExporter())))
    trace.set_tracer_provider(provider)
    return provider


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return tuple(_clean(v) for v in value)
    return value


def _clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: _clean(value) for key, value in (attributes or {}).items()}


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` whose string attributes, event attributes and status are redacted."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_clean_attributes(span.attributes),
        events=[Event(e.name, _clean_attributes(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter(SpanExporter):
    """Redacts each span, then hands it to the wrapped exporter."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redacted_span(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
