"""Prometheus metrics on an injected registry, and tracing set up from `OTEL_*` variables."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from actors.observe import (
    ActorCrashed,
    BudgetApplied,
    CompressionFinished,
    EventsStored,
    LLMCalled,
    MailboxRejected,
    ProfileAccessed,
    PromptBuilt,
    TransitionMade,
    TurnFinished,
)
from adapters.observability.metrics import ButlerMetrics
from adapters.observability.tracing import configure_tracing
from engine.lifecycle import Phase, Trigger


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ButlerMetrics:
    return ButlerMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples}


def test_required_metric_names_exist(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    # Counters without labels appear at once; labelled ones once a label set is used.
    metrics.record(TurnFinished("text", "ok", 0.1, 0.05))
    metrics.record(EventsStored(("user",)))
    metrics.record(TransitionMade(Phase.IDLE, Phase.GENERATING, Trigger.HEAR_TEXT))
    names = sample_names(registry)
    for required in (
        "personalized_requests_total",
        "user_memory_events_total",
        "user_profile_reads_total",
        "personalized_prompt_truncations_total",
        "butler_actor_transitions_total",
    ):
        assert required in names


def test_no_metric_has_a_user_id_label(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(TurnFinished("voice", "degraded", 1.0, 0.5))
    metrics.record(EventsStored(("user", "assistant")))
    metrics.record(TransitionMade(Phase.GENERATING, Phase.IDLE, Trigger.REPLIED))
    metrics.record(LLMCalled("reply", "ok", 1, 0.2, 100, 20))
    metrics.record(CompressionFinished("error", 3.0, 0, "timeout"))
    for family in registry.collect():
        for sample in family.samples:
            assert "user_id" not in sample.labels, sample.name
            assert "user" not in sample.labels, sample.name


def test_turn_finished(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(TurnFinished("voice", "ok", 2.0, 0.5))
    metrics.record(TurnFinished("voice", "ok", 3.0, 1.0))
    metrics.record(TurnFinished("text", "error", 0.1, 0.1))
    labels = {"source": "voice", "status": "ok"}
    assert value(registry, "personalized_requests_total", **labels) == 2
    assert value(registry, "personalized_requests_total", source="text", status="error") == 1
    assert value(registry, "butler_turn_latency_seconds_count", **labels) == 2
    assert value(registry, "butler_turn_latency_seconds_sum", **labels) == 5.0
    assert value(registry, "butler_turn_service_seconds_sum", **labels) == 1.5


def test_prompt_built(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(PromptBuilt(1200, truncated=False))
    assert value(registry, "personalized_prompt_truncations_total") == 0
    metrics.record(PromptBuilt(2000, truncated=True))
    assert value(registry, "personalized_prompt_truncations_total") == 1
    assert value(registry, "personalized_prompt_tokens_count") == 2
    assert value(registry, "personalized_prompt_tokens_sum") == 3200
    assert value(registry, "personalized_prompt_tokens_bucket", le="1250.0") == 1


def test_events_stored(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(EventsStored(("user", "assistant", "user")))
    assert value(registry, "user_memory_events_total", role="user") == 2
    assert value(registry, "user_memory_events_total", role="assistant") == 1


def test_profile_reads_and_writes(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(ProfileAccessed(write=False, seconds=0.002))
    metrics.record(ProfileAccessed(write=False, seconds=0.003))
    metrics.record(ProfileAccessed(write=True))
    assert value(registry, "user_profile_reads_total") == 2
    assert value(registry, "user_profile_writes_total") == 1
    assert value(registry, "user_profile_read_duration_seconds_count") == 2
    assert value(registry, "user_profile_read_duration_seconds_sum") == pytest.approx(0.005)


def test_llm_called(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(LLMCalled("reply", "ok", 0, 0.5, 100, 20))
    metrics.record(LLMCalled("reply", "ok", 1, 0.7, 50, 10))  # a fallback answered
    metrics.record(LLMCalled("summary", "unavailable", 0, 2.0, 0, 0))
    assert value(registry, "butler_llm_requests_total", purpose="reply", status="ok") == 2
    assert (
        value(registry, "butler_llm_requests_total", purpose="summary", status="unavailable") == 1
    )
    assert value(registry, "butler_llm_fallbacks_total", purpose="reply") == 1
    assert value(registry, "butler_llm_fallbacks_total", purpose="summary") == 0
    metrics.record(LLMCalled("summary", "ok", 0, 1.0, 300, 60))
    tokens = "butler_llm_tokens_total"
    assert value(registry, tokens, direction="input", purpose="reply") == 150
    assert value(registry, tokens, direction="output", purpose="reply") == 30
    assert value(registry, tokens, direction="input", purpose="summary") == 300
    assert value(registry, tokens, direction="output", purpose="summary") == 60
    assert value(registry, "butler_llm_request_duration_seconds_count", purpose="reply") == 2


def test_a_failed_fallback_is_not_counted_as_a_fallback(
    metrics: ButlerMetrics, registry: CollectorRegistry
) -> None:
    metrics.record(LLMCalled("reply", "unavailable", 2, 1.0, 0, 0))
    assert value(registry, "butler_llm_fallbacks_total", purpose="reply") == 0


def test_budget_degradations_by_level(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    for level in ("reduced", "reduced", "exhausted"):
        metrics.record(BudgetApplied(level))
    assert value(registry, "butler_budget_degraded_total", level="reduced") == 2
    assert value(registry, "butler_budget_degraded_total", level="exhausted") == 1


def test_compression_finished(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(CompressionFinished("ok", 4.0, 30))
    metrics.record(CompressionFinished("error", 1.0, 0, "wrong_language"))
    assert value(registry, "personalized_memory_compressions_total", status="ok") == 1
    assert value(registry, "personalized_memory_compressions_total", status="error") == 1
    assert value(registry, "user_memory_compressions_total") == 1
    assert value(registry, "user_memory_compression_duration_seconds_count") == 2


def test_transition_made(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(TransitionMade(Phase.GENERATING, Phase.DEGRADED, Trigger.LLM_UNAVAILABLE))
    labels = {"from": "generating", "to": "degraded", "trigger": "llm_unavailable"}
    assert value(registry, "butler_actor_transitions_total", **labels) == 1


def test_rejections_and_crashes(metrics: ButlerMetrics, registry: CollectorRegistry) -> None:
    metrics.record(MailboxRejected())
    metrics.record(MailboxRejected())
    metrics.record(ActorCrashed())
    assert value(registry, "butler_mailbox_rejections_total") == 2
    assert value(registry, "butler_actor_crashes_total") == 1


def test_registries_are_isolated() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ButlerMetrics(a).record(MailboxRejected())
    ButlerMetrics(b)  # a second set of instruments: no duplicate-registration error
    assert value(a, "butler_mailbox_rejections_total") == 1
    assert value(b, "butler_mailbox_rejections_total") == 0


@pytest.mark.parametrize("flag", ["true", "TRUE", "True"])
def test_disabled_sdk_installs_nothing(flag: str) -> None:
    before = trace.get_tracer_provider()
    assert configure_tracing({"OTEL_SDK_DISABLED": flag, "OTEL_TRACES_EXPORTER": "console"}) is None
    assert trace.get_tracer_provider() is before


def _configured(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> TracerProvider:
    # The global provider can be set once per process: capture it instead of installing it.
    installed: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    provider = configure_tracing(env)
    assert provider is not None
    assert installed == [provider]
    return provider


def _processors(provider: TracerProvider) -> tuple[object, ...]:
    return tuple(provider._active_span_processor._span_processors)


def test_console_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = _configured(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "butler-test"}, monkeypatch
    )
    try:
        assert provider.resource.attributes["service.name"] == "butler-test"
        assert len(_processors(provider)) == 1
    finally:
        provider.shutdown()


def test_no_exporter_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = _configured({}, monkeypatch)
    try:
        assert provider.resource.attributes["service.name"] == "butler"
        assert _processors(provider) == ()
    finally:
        provider.shutdown()


def test_exporter_none_wins_over_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    provider = _configured(env, monkeypatch)
    try:
        assert _processors(provider) == ()
    finally:
        provider.shutdown()
