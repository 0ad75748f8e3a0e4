"""Prometheus instruments: actors' observations, live actor gauges, the memory worker.

Only this module touches `prometheus_client` for Butler's own metrics (the Telegram package
keeps its own instruments beside the code they count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from actors.memory_worker import RunReport
from actors.observe import (
    ActorCrashed,
    BudgetApplied,
    CacheLooked,
    ClaimRefused,
    CompressionFinished,
    EventsStored,
    LeasesRenewed,
    LeaseTakenOver,
    LLMCalled,
    MailboxRejected,
    MessagesJoined,
    Observation,
    OwnershipLost,
    ProfileAccessed,
    PromptBuilt,
    TransitionMade,
    TurnFinished,
)
from actors.registry import Registry

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_TOKEN_BUCKETS = (100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 3000)


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
            "butler_llm_tokens",
            "Tokens reported by the model, by direction (input, output) and purpose.",
            ["direction", "purpose"],
            registry=r,
        )
        self.budget_degraded = Counter(
            "butler_budget_degraded",
            "Turns that started over 80 % of a user's token budget: reduced (a brief prompt) "
            "or exhausted (the budget line, no model call).",
            ["level"],
            registry=r,
        )
        self.transitions = Counter(
            "butler_actor_transitions",
            "Lifecycle transitions.",
            ["from", "to", "trigger"],
            registry=r,
        )
        self.joined = Counter(
            "butler_turn_joined_messages",
            "Messages answered within another message's turn: coalesced (within the window) "
            "or over_rate (over the user's rate).",
            ["reason"],
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
            "butler_llm_cache_hits",
            "Model calls answered from the response cache, by purpose.",
            ["purpose"],
            registry=r,
        )
        self.cache_misses = Counter(
            "butler_llm_cache_misses",
            "Model calls the response cache could not answer, by purpose.",
            ["purpose"],
            registry=r,
        )
        self.lease_renewals = Counter(
            "butler_lease_renewals",
            "Claims on users renewed, by outcome (ok, lost: taken over, failed: store down).",
            ["outcome"],
            registry=r,
        )
        self.lease_takeovers = Counter(
            "butler_lease_takeovers",
            "Users taken from a process whose claim had expired unreleased, or that is gone.",
            registry=r,
        )
        self.leases_lost = Counter(
            "butler_leases_lost",
            "Live actors stopped because another process took their user over.",
            registry=r,
        )
        self.claims_refused = Counter(
            "butler_lease_claims_refused",
            "Messages for users another process serves: handed over to it, or refused.",
            ["outcome"],
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
            MessagesJoined: self._joined,
            BudgetApplied: lambda o: self.budget_degraded.labels(o.level).inc(),
            MailboxRejected: lambda _: self.rejections.inc(),
            ActorCrashed: lambda _: self.crashes.inc(),
            LeasesRenewed: self._renewed,
            LeaseTakenOver: lambda _: self.lease_takeovers.inc(),
            OwnershipLost: lambda _: self.leases_lost.inc(),
            ClaimRefused: lambda o: self.claims_refused.labels(
                "handed_over" if o.handed_over else "refused"
            ).inc(),
        }

    def record(self, observation: Observation) -> None:
        self._dispatch[type(observation)](observation)

    def _renewed(self, o: LeasesRenewed) -> None:
        for outcome, count in (("ok", o.renewed), ("lost", o.lost), ("failed", o.failed)):
            if count:
                self.lease_renewals.labels(outcome).inc(count)

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
            self.llm_tokens.labels("input", o.purpose).inc(o.prompt_tokens)
        if o.completion_tokens:
            self.llm_tokens.labels("output", o.purpose).inc(o.completion_tokens)

    def _joined(self, o: MessagesJoined) -> None:
        if o.coalesced:
            self.joined.labels("coalesced").inc(o.coalesced)
        if o.over_rate:
            self.joined.labels("over_rate").inc(o.over_rate)

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
        yield GaugeMetricFamily(
            "butler_leases_held",
            "Users this process holds a claim on (its live actors, under an ownership).",
            value=self._registry.leases.count(),
        )
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
        budget = GaugeMetricFamily(
            "butler_budget_users",
            "Live users whose last turn found them over a token budget: level reduced (80 % "
            "or more) or exhausted (100 %), period day or month (the one that set the level).",
            labels=["level", "period"],
        )
        for (level, period), count in self._registry.budget_levels().items():
            budget.add_metric([level, period], count)
        yield budget
        yield GaugeMetricFamily(
            "butler_personalization_enabled",
            "1 while replies are personalized; 0: the kill switch is on (the plain model).",
            value=1 if self._registry.settings.personalization else 0,
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


class WorkerMetrics:
    """`personalized_memory_worker_*` on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.runs = Counter(
            "personalized_memory_worker_runs", "Compression worker runs.", registry=registry
        )
        self.errors = Counter(
            "personalized_memory_worker_errors",
            "Compression worker runs that failed (store down, or a request not taken).",
            registry=registry,
        )
        self.consecutive = Gauge(
            "butler_memory_worker_consecutive_failures",
            "Failed worker runs since the last successful one.",
            registry=registry,
        )
        self.last_success = Gauge(
            "butler_memory_worker_last_success_timestamp_seconds",
            "When the worker last finished a run without failure (Unix time).",
            registry=registry,
        )
        self.requested = Counter(
            "butler_memory_worker_requests",
            "Compression requests handed to actors.",
            registry=registry,
        )

    def record(self, report: RunReport, now: float) -> None:
        self.runs.inc()
        self.requested.inc(report.requested)
        if report.ok:
            self.consecutive.set(0)
            self.last_success.set(now)
        else:
            self.errors.inc()
            self.consecutive.inc()

    def restore(self, path: Path) -> None:
        """Continue the counters of an earlier `--once` run from its textfile."""
        if not path.exists():
            return
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(path.read_text(encoding="utf-8"))
            for s in family.samples
        }
        for name, counter in (
            ("personalized_memory_worker_runs_total", self.runs),
            ("personalized_memory_worker_errors_total", self.errors),
            ("butler_memory_worker_requests_total", self.requested),
        ):
            counter.inc(values.get(name, 0.0))
        self.consecutive.set(values.get("butler_memory_worker_consecutive_failures", 0.0))
        self.last_success.set(
            values.get("butler_memory_worker_last_success_timestamp_seconds", 0.0)
        )

    def write(self, path: Path) -> None:
        """Write every worker metric for node_exporter's textfile collector (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)


class StoreHealthMetrics:
    """`butler_store_*`: whether the store still keeps what it is given (see `Store.check`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.healthy = Gauge(
            "butler_store_healthy",
            "1 while the store's last check passed; 0 when it was lost (file removed or "
            "replaced, database dropped) or cannot be reached.",
            registry=registry,
        )
        self.checks = Counter(
            "butler_store_checks",
            "Store checks, by outcome (ok, unavailable).",
            ["outcome"],
            registry=registry,
        )

    def record(self, *, ok: bool) -> None:
        self.healthy.set(1 if ok else 0)
        self.checks.labels("ok" if ok else "unavailable").inc()


class BrokerMetrics:
    """`butler_broker_*`: this worker's partitions (a `PartitionObserver`), its consumer lag
    and what became of the updates it consumed."""

    def __init__(self, registry: CollectorRegistry, *, partitions: int) -> None:
        r = registry
        self.partitions = Gauge(
            "butler_broker_partitions", "Partitions of the broker's log (configured).", registry=r
        )
        self.partitions.set(partitions)
        self.owned_partitions = Gauge(
            "butler_broker_partitions_owned", "Partitions this worker owns now.", registry=r
        )
        self.takeovers = Counter(
            "butler_broker_partition_takeovers",
            "Partitions taken whose lease had expired unreleased (a dead or paused worker).",
            registry=r,
        )
        self.renewals = Counter(
            "butler_broker_lease_renewals",
            "Partition lease renewals, by outcome (ok, lost: taken over, failed: store down).",
            ["outcome"],
            registry=r,
        )
        self.rebalances = Counter(
            "butler_broker_rebalances",
            "Rounds in which this worker handed partitions back (a worker joined).",
            registry=r,
        )
        self.lag = Gauge(
            "butler_broker_consumer_lag",
            "Updates appended and not yet confirmed, summed over the owned partitions.",
            registry=r,
        )
        self.live_workers = Gauge(
            "butler_broker_workers",
            "Live workers this worker sees (membership leases), itself included.",
            registry=r,
        )
        self.updates = Counter(
            "butler_broker_updates",
            "Updates consumed, by outcome (handled, retried: comes again, poisoned: unreadable).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "lost", "failed"):
            self.renewals.labels(outcome)
        for outcome in ("handled", "retried", "poisoned"):
            self.updates.labels(outcome)

    def owned(self, count: int) -> None:
        self.owned_partitions.set(count)

    def takeover(self) -> None:
        self.takeovers.inc()

    def renewal(self, outcome: str) -> None:
        self.renewals.labels(outcome).inc()

    def rebalance(self) -> None:
        self.rebalances.inc()

    def workers(self, count: int) -> None:
        self.live_workers.set(count)

    def update(self, outcome: str) -> None:
        self.updates.labels(outcome).inc()
