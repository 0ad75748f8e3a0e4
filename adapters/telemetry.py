"""OpenTelemetry SDK setup from the standard `OTEL_*` variables, and Prometheus metrics.

Only this module touches the SDK and `prometheus_client`; the core uses the OTel API and
reports observations through `actors.observe.Observer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from actors.observe import (
    ActorCrashed,
    CacheLooked,
    CompressionFinished,
    EventsStored,
    LLMCalled,
    MailboxRejected,
    Observation,
    ProfileAccessed,
    PromptBuilt,
    TransitionMade,
    TurnFinished,
)
from actors.registry import Registry
from adapters.redaction import RedactingExporter

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_TOKEN_BUCKETS = (100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 3000)


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


class ButlerMetrics:
    """Prometheus instruments on an injected registry; an `Observer` for actors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "personalized_requests",
            "Messages answered, by source and outcome.",
            ["source", "status"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "butler_turn_latency_seconds",
            "From acceptance to reply, including time waiting in the mailbox.",
            ["source", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_service = Histogram(
            "butler_turn_service_seconds",
            "The actor's own time on a message, excluding time waiting in the mailbox.",
            ["source", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Histogram(
            "personalized_prompt_tokens",
            "Tokens in each reply prompt.",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.truncations = Counter(
            "personalized_prompt_truncations",
            "Prompts that dropped events or cut the summary to fit the budget.",
            registry=r,
        )
        self.memory_events = Counter(
            "user_memory_events", "Memory events stored, by role.", ["role"], registry=r
        )
        self.profile_reads = Counter("user_profile_reads", "Profile reads.", registry=r)
        self.profile_writes = Counter("user_profile_writes", "Profile writes.", registry=r)
        self.profile_read_seconds = Histogram(
            "user_profile_read_duration_seconds",
            "Duration of the read job that loads a profile and recent memory.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.compressions = Counter(
            "personalized_memory_compressions",
            "Compression runs by outcome.",
            ["status"],
            registry=r,
        )
        self.compressions_ok = Counter(
            "user_memory_compressions", "Successful memory compressions.", registry=r
        )
        self.compression_seconds = Histogram(
            "user_memory_compression_duration_seconds",
            "Compression duration.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_requests = Counter(
            "butler_llm_requests",
            "Language-model calls by purpose and outcome.",
            ["purpose", "status"],
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "butler_llm_fallbacks",
            "Calls answered by a fallback endpoint, not the primary.",
            ["purpose"],
            registry=r,
        )
        self.llm_seconds = Histogram(
            "butler_llm_request_duration_seconds",
            "Language-model call duration.",
            ["purpose"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "butler_llm_tokens", "Tokens reported by the model.", ["direction"], registry=r
        )
        self.transitions = Counter(
            "butler_actor_transitions",
            "Lifecycle transitions.",
            ["from", "to", "trigger"],
            registry=r,
        )
        self.rejections = Counter(
            "butler_mailbox_rejections",
            "Messages refused because a mailbox was full.",
            registry=r,
        )
        self.crashes = Counter(
            "butler_actor_crashes", "Actor loops that crashed and were restarted.", registry=r
        )
        self.cache_hits = Counter(
            "personalized_llm_cache_hits",
            "Model calls answered from the response cache, by purpose.",
            ["purpose"],
            registry=r,
        )
        self.cache_misses = Counter(
            "personalized_llm_cache_misses",
            "Model calls the response cache could not answer, by purpose.",
            ["purpose"],
            registry=r,
        )
        self._dispatch: dict[type, Callable[[Any], None]] = {
            CacheLooked: self._cache,
            TransitionMade: self._transition,
            TurnFinished: self._turn,
            PromptBuilt: self._prompt,
            EventsStored: self._events,
            ProfileAccessed: self._profile,
            LLMCalled: self._llm,
            CompressionFinished: self._compression,
            MailboxRejected: lambda _: self.rejections.inc(),
            ActorCrashed: lambda _: self.crashes.inc(),
        }

    def record(self, observation: Observation) -> None:
        self._dispatch[type(observation)](observation)

    def _transition(self, o: TransitionMade) -> None:
        self.transitions.labels(o.source.value, o.dest.value, o.trigger.value).inc()

    def _turn(self, o: TurnFinished) -> None:
        self.requests.labels(o.source, o.status).inc()
        self.turn_latency.labels(o.source, o.status).observe(o.latency_s)
        self.turn_service.labels(o.source, o.status).observe(o.service_s)

    def _prompt(self, o: PromptBuilt) -> None:
        self.prompt_tokens.observe(o.tokens)
        if o.truncated:
            self.truncations.inc()

    def _events(self, o: EventsStored) -> None:
        for role in o.roles:
            self.memory_events.labels(role).inc()

    def _profile(self, o: ProfileAccessed) -> None:
        if o.write:
            self.profile_writes.inc()
        else:
            self.profile_reads.inc()
            self.profile_read_seconds.observe(o.seconds)

    def _cache(self, o: CacheLooked) -> None:
        (self.cache_hits if o.hit else self.cache_misses).labels(o.purpose).inc()

    def _llm(self, o: LLMCalled) -> None:
        self.llm_requests.labels(o.purpose, o.status).inc()
        self.llm_seconds.labels(o.purpose).observe(o.seconds)
        if o.status == "ok" and o.endpoint > 0:
            self.llm_fallbacks.labels(o.purpose).inc()
        if o.prompt_tokens:
            self.llm_tokens.labels("input").inc(o.prompt_tokens)
        if o.completion_tokens:
            self.llm_tokens.labels("output").inc(o.completion_tokens)

    def _compression(self, o: CompressionFinished) -> None:
        self.compressions.labels(o.status).inc()
        self.compression_seconds.observe(o.seconds)
        if o.status == "ok":
            self.compressions_ok.inc()


class ActorCollector(Collector):
    """Live actors per state and mailbox depths, read from the registry at scrape time."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        states = GaugeMetricFamily("butler_actors", "Live actors by state.", labels=["state"])
        for phase, count in self._registry.count_by_phase().items():
            states.add_metric([phase.value], count)
        yield states
        depths = self._registry.mailbox_depths()
        yield GaugeMetricFamily(
            "butler_mailbox_messages", "Messages waiting in all mailboxes.", value=sum(depths)
        )
        yield GaugeMetricFamily(
            "butler_mailbox_depth_max", "Deepest mailbox right now.", value=max(depths, default=0)
        )
        views = self._registry.views()
        yield GaugeMetricFamily(
            "butler_actor_turn_age_max_seconds",
            "Age of the oldest turn in flight (0 when no turn runs).",
            value=max((v.turn_age_s or 0.0 for v in views), default=0.0),
        )
        yield GaugeMetricFamily(
            "butler_actor_messages_per_hour_max",
            "Messages the busiest live user sent in the trailing hour (no user label).",
            value=max((v.messages_per_hour for v in views), default=0.0),
        )
        feed = self._registry.feed
        yield GaugeMetricFamily(
            "butler_admin_subscribers", "Open admin event streams.", value=len(feed)
        )
        yield CounterMetricFamily(
            "butler_admin_subscribers_dropped",
            "Admin event streams dropped because the client read too slowly.",
            value=feed.dropped_total,
        )

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(())
