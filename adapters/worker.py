"""The background compression worker: finds users whose memory can be folded, asks their actor.

Candidates are users over the threshold, and idle users (no event for `idle_s`) holding more
than `keep_last + IDLE_MIN_FOLD` events. The worker never compresses by itself: it asks the
user's actor, through its mailbox, so a compression never races a live turn. When `butler
run` serves the users, the request goes to its admin API; when no service answers, the worker
runs its own registry over the store (see `butler worker`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from actors.registry import Registry
from engine.compression import CompressionPolicy
from engine.errors import ButlerError, StoreUnavailable
from engine.messages import CompressMemory
from engine.ports import Clock, OutgoingReply, Store

log = logging.getLogger(__name__)

IDLE_MIN_FOLD = 10
"""An idle user is worth a summary only with at least this many events beyond the kept tail."""
CANDIDATE_LIMIT = 1000
"""Users looked at per run and per kind (the busiest first); the next run takes the rest."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A user to compress; `eager` when only idleness (not the threshold) makes them one."""

    user_id: str
    events: int
    eager: bool


class ServiceAbsent(ButlerError):
    """No service answers at the admin URL: nothing is serving these users right now."""


class RequestFailed(ButlerError):
    """The service or the actor did not take a compression request."""


class CompressionRequester(Protocol):
    """Asks a user's actor to compress; raises `RequestFailed` (or `ServiceAbsent`)."""

    async def request(self, candidate: Candidate) -> None: ...


async def find_candidates(
    store: Store, policy: CompressionPolicy, clock: Clock, *, idle_s: float
) -> list[Candidate]:
    """Users over the threshold, then idle users with a history worth folding."""
    over = await store.users_over(policy.threshold, limit=CANDIDATE_LIMIT)
    found = [Candidate(user_id, count, eager=False) for user_id, count in over]
    seen = {c.user_id for c in found}
    cutoff = clock.now() - timedelta(seconds=idle_s)
    for user_id, count in await store.users_over(
        policy.keep_last + IDLE_MIN_FOLD, limit=CANDIDATE_LIMIT
    ):
        if user_id not in seen and await _last_event_before(store, user_id, cutoff):
            found.append(Candidate(user_id, count, eager=True))
    return found


async def _last_event_before(store: Store, user_id: str, cutoff: datetime) -> bool:
    newest = (await store.load_turn(user_id, limit=1, before="\uffff")).memory.events
    return bool(newest) and newest[-1].created_at < cutoff


class AdminRequester:
    """Asks a running service: `POST {admin_url}/admin/actors/{user_id}/compress` -> 202.

    `?eager=1` marks an idle user under the threshold. A refused connection raises
    `ServiceAbsent`; any other failure `RequestFailed`.
    """

    def __init__(self, admin_url: str, token: str = "", *, timeout_s: float = 10.0) -> None:
        self._base = admin_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 3))
        self._session: aiohttp.ClientSession | None = None

    async def request(self, candidate: Candidate) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"{self._base}/admin/actors/{quote(candidate.user_id, safe='')}/compress"
        params = {"eager": "1"} if candidate.eager else {}
        try:
            async with self._session.post(url, params=params, headers=self._headers) as resp:
                if resp.status != 202:
                    raise RequestFailed(f"admin API answered {resp.status}")
        except aiohttp.ClientConnectorError as exc:
            raise ServiceAbsent(f"no service at {self._base}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RequestFailed(f"admin API failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class RegistryRequester:
    """Queues `CompressMemory` in a registry in this process and waits until it is handled.

    With `skip_owed` (the worker's own registry, no service running) a user with messages
    still owed a reply is left alone: activating the actor would answer them where nobody
    hears it. The service answers them, then compresses inline.
    """

    def __init__(
        self, registry: Registry, store: Store, *, timeout_s: float, skip_owed: bool = False
    ) -> None:
        self._registry = registry
        self._store = store
        self._timeout_s = timeout_s
        self._skip_owed = skip_owed

    async def request(self, candidate: Candidate) -> None:
        if self._skip_owed and await self._store.unanswered(candidate.user_id):
            log.info("worker skipped a user with messages owed a reply")
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                taken = await self._registry.ask_and_wait(
                    candidate.user_id, CompressMemory(eager=candidate.eager)
                )
        except TimeoutError as exc:
            raise RequestFailed("the actor did not finish compressing in time") from exc
        except ButlerError as exc:
            raise RequestFailed(f"the registry refused: {type(exc).__name__}") from exc
        if not taken:
            raise RequestFailed("the actor's mailbox is full")


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
            "personalized_memory_worker_consecutive_failures",
            "Failed worker runs since the last successful one.",
            registry=registry,
        )
        self.last_success = Gauge(
            "personalized_memory_worker_last_success_timestamp_seconds",
            "When the worker last finished a run without failure (Unix time).",
            registry=registry,
        )
        self.requested = Counter(
            "personalized_memory_worker_requests",
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
            ("personalized_memory_worker_requests_total", self.requested),
        ):
            counter.inc(values.get(name, 0.0))
        self.consecutive.set(values.get("personalized_memory_worker_consecutive_failures", 0.0))
        self.last_success.set(
            values.get("personalized_memory_worker_last_success_timestamp_seconds", 0.0)
        )

    def write(self, path: Path) -> None:
        """Write every worker metric for node_exporter's textfile collector (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)


@dataclass(frozen=True, slots=True)
class RunReport:
    """One sweep: candidates found, requests taken, failures (and whether the store failed)."""

    candidates: int
    requested: int
    failures: int
    store_failed: bool = False

    @property
    def ok(self) -> bool:
        return not self.store_failed and self.failures == 0


async def sweep(candidates: Sequence[Candidate], requester: CompressionRequester) -> RunReport:
    """Ask for each candidate in turn; one failure does not stop the others.

    Raises:
        ServiceAbsent: on the first request, when no service answers (nothing was asked).
    """
    requested = failures = 0
    for index, candidate in enumerate(candidates):
        try:
            await requester.request(candidate)
        except ServiceAbsent:
            if index == 0:
                raise
            failures += 1  # the service went away mid-run
        except RequestFailed as exc:
            log.warning("worker request failed: %s", exc)
            failures += 1
        else:
            requested += 1
    return RunReport(len(candidates), requested, failures)


class DiscardSink:
    """The worker's own registry answers nobody: it only compresses (owed users are skipped)."""

    async def deliver(self, reply: OutgoingReply) -> None:
        log.warning("worker registry produced a reply; it was not delivered")


Sweep = Callable[[], Awaitable[RunReport]]


async def run_periodically(
    run: Sweep, metrics: WorkerMetrics, clock: Clock, interval_s: float
) -> None:
    """Run `run` every `interval_s` until cancelled, recording each outcome."""
    while True:
        report = await guarded(run)
        metrics.record(report, clock.now().timestamp())
        await asyncio.sleep(interval_s)  # noqa: TID251 - a periodic job


async def guarded(run: Sweep) -> RunReport:
    """`run()`, with a dead store counted as a failed run rather than raised."""
    try:
        return await run()
    except StoreUnavailable:
        log.warning("worker run failed: store unavailable")
        return RunReport(0, 0, 0, store_failed=True)


@dataclass(slots=True)
class InProcessWorker:
    """The worker inside `butler run`: asks the service's own registry; cancel to stop."""

    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task


def start_worker(
    *,
    registry: Registry,
    store: Store,
    policy: CompressionPolicy,
    clock: Clock,
    metrics: CollectorRegistry,
    interval_s: float,
    idle_s: float,
) -> InProcessWorker:
    """Start the periodic worker in this process (its metrics go on `metrics`)."""
    worker_metrics = WorkerMetrics(metrics)
    requester = RegistryRequester(registry, store, timeout_s=policy.timeout_s * 2)

    async def run() -> RunReport:
        candidates = await find_candidates(store, policy, clock, idle_s=idle_s)
        return await sweep(candidates, requester)

    task = asyncio.create_task(run_periodically(run, worker_metrics, clock, interval_s))
    return InProcessWorker(task)
