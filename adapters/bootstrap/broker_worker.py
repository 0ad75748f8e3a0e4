"""`butler run` on a broker: the updates of the partitions this worker owns, read from the
`PartitionLog`, fed to the same Telegram intake as polling, confirmed once stored.

A payload is the raw Telegram update (JSON bytes) a front door published. The handler says
True (confirm) only when the update's message is stored, or deliberately dropped (unreadable,
a repeat, a user not allowed); a transient failure says False and the update comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actors.partitions import PARTITION_PREFIX, PartitionOwner, partition_of_key
from adapters.observability.metrics import BrokerMetrics
from engine.errors import StoreUnavailable
from engine.ports import Clock, Handler, LeaseStore, PartitionLog

if TYPE_CHECKING:
    from adapters.bootstrap.settings import Settings
    from adapters.telegram.dispatch import Intake
    from adapters.telegram.outbound import Pacer

log = logging.getLogger(__name__)

LAG_SAMPLE_S = 5.0


class SharedBotBudget:
    """The partition owner's observer (metrics) that also splits the bot-wide send budget:
    Telegram allows a bot ~30 messages a second however many processes send for it, so each
    of N live workers spaces its sends N times the one-process interval. One chat is served by
    one worker at a time, so the per-chat budget stays whole."""

    def __init__(self, metrics: BrokerMetrics, pacer: Pacer) -> None:
        self._metrics = metrics
        self._pacer = pacer
        self._interval_s = pacer.per_bot_s

    def owned(self, count: int) -> None:
        self._metrics.owned(count)

    def takeover(self) -> None:
        self._metrics.takeover()

    def renewal(self, outcome: str) -> None:
        self._metrics.renewal(outcome)

    def rebalance(self) -> None:
        self._metrics.rebalance()

    def workers(self, count: int) -> None:
        self._metrics.workers(count)
        self._pacer.per_bot_s = self._interval_s * max(1, count)


def update_handler(intake: Intake, metrics: BrokerMetrics) -> Handler:
    """payload -> update -> the intake; True once stored or deliberately dropped."""
    from adapters.telegram.updates import Poisoned, read_update, update_id_of

    async def handle(payload: bytes) -> bool:
        try:
            raw = json.loads(payload)
        except ValueError:  # UnicodeDecodeError included
            intake.give_up(Poisoned(None, "not JSON"))
            metrics.update("poisoned")
            return True
        try:
            update = read_update(raw, intake.bot)
        except ValueError as exc:
            intake.give_up(Poisoned(update_id_of(raw), str(exc)))
            metrics.update("poisoned")
            return True
        # One user's updates are all in one partition, consumed one at a time: in order.
        ok = await intake.handle(update)
        metrics.update("handled" if ok else "retried")
        return ok

    return handle


async def open_partition_log(settings: Settings) -> PartitionLog:
    """The NATS JetStream log of `BUTLER_BROKER_URL`."""
    # Built on the `nats` branch; the ignore goes once both are merged.
    from adapters.broker.nats import (
        NatsPartitionLog,
    )

    log_: PartitionLog = await NatsPartitionLog.connect(
        settings.broker_urls,
        partitions=settings.broker_partitions,
        replicas=settings.broker_replicas,
    )
    return log_


async def sample_lag(owner: PartitionOwner, metrics: BrokerMetrics, *, every_s: float) -> None:
    while True:
        try:
            metrics.lag.set(await owner.lag())
        except Exception as exc:  # noqa: BLE001 - a sample missed; no message text
            log.warning("consumer lag not sampled: %s", type(exc).__name__)
        await asyncio.sleep(every_s)  # noqa: TID251 - a periodic job


@asynccontextmanager
async def running(owner: PartitionOwner, metrics: BrokerMetrics) -> AsyncIterator[PartitionOwner]:
    """Own partitions (and sample the lag) inside; on exit stop consuming and free them."""
    sampler = asyncio.create_task(sample_lag(owner, metrics, every_s=LAG_SAMPLE_S))
    try:
        async with owner:
            yield owner
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


class PartitionsView:
    """What /admin/actors shows of the partitions: this worker's and every live lease."""

    def __init__(self, owner: PartitionOwner, store: LeaseStore, clock: Clock) -> None:
        self._owner = owner
        self._store = store
        self._clock = clock

    async def __call__(self) -> dict[str, Any]:
        snap = self._owner.snapshot()
        try:
            leases = await self._store.leases(PARTITION_PREFIX, now=self._clock.now())
        except StoreUnavailable:
            leases = []  # this worker's own view still shows
        rows: list[dict[str, Any]] = []
        for lease in leases:
            partition = partition_of_key(lease.key)
            if partition is not None:
                rows.append(
                    {
                        "partition": partition,
                        "owner": lease.owner,
                        "expires_at": _iso(lease.expires_at),
                    }
                )
        rows.sort(key=lambda row: int(row["partition"]))
        return {
            "owner": snap.owner,
            "owned": snap.partitions,
            "fair_share": snap.fair_share,
            "workers": snap.workers,
            "all": rows,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
