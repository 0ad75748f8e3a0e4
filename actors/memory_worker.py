"""The background compression worker: finds users whose memory can be folded, asks their actor.

Candidates are users over the threshold, and idle users (no event for `idle_s`) holding more
than `keep_last + IDLE_MIN_FOLD` events. The worker never compresses by itself: it asks the
user's actor, through its mailbox, so a compression never races a live turn. When `butler
run` serves the users, the request goes to its admin API; when no service answers, the worker
runs its own registry over the store (see `butler worker`). The admin API's requester lives
in `adapters.admin.client`; the metrics in `adapters.observability.metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from actors.registry import Registry
from engine.compression import CompressionPolicy
from engine.errors import ButlerError, DeliveryFailed, OwnedElsewhere, StoreUnavailable
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
        except OwnedElsewhere:
            log.info("worker skipped a user another process serves (its worker compresses)")
            return
        except ButlerError as exc:
            raise RequestFailed(f"the registry refused: {type(exc).__name__}") from exc
        if not taken:
            raise RequestFailed("the actor's mailbox is full")


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

    async def deliver(self, reply: OutgoingReply) -> str:
        log.warning("worker registry produced a reply; it stays owed for the service")
        raise DeliveryFailed("the worker's registry has no front door")


Sweep = Callable[[], Awaitable[RunReport]]


class RunRecorder(Protocol):
    """Where each sweep's outcome goes (the worker metrics)."""

    def record(self, report: RunReport, now: float) -> None: ...


async def run_periodically(
    run: Sweep, metrics: RunRecorder, clock: Clock, interval_s: float
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
    metrics: RunRecorder,
    interval_s: float,
    idle_s: float,
) -> InProcessWorker:
    """Start the periodic worker in this process; each sweep is recorded on `metrics`."""
    requester = RegistryRequester(registry, store, timeout_s=policy.timeout_s * 2)

    async def run() -> RunReport:
        candidates = await find_candidates(store, policy, clock, idle_s=idle_s)
        return await sweep(candidates, requester)

    task = asyncio.create_task(run_periodically(run, metrics, clock, interval_s))
    return InProcessWorker(task)
