"""Workers on a broker share the bot's send budget: Telegram's ~30 messages a second is per
bot, however many processes send for it. Each live worker's pacer spaces its sends N times the
one-process interval, and takes its whole share back when the others are gone."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from actors.partitions import PartitionOwner
from adapters.bootstrap.broker_worker import SharedBotBudget
from adapters.bootstrap.clock import SystemClock
from adapters.broker.memory import MemoryPartitionLog
from adapters.observability.metrics import BrokerMetrics
from adapters.storage.memory import MemoryStore
from adapters.telegram.outbound import Pacer

pytestmark = pytest.mark.anyio


async def ignore(payload: bytes) -> bool:
    return True


def owner(
    name: str, log: MemoryPartitionLog, store: MemoryStore, budget: SharedBotBudget
) -> PartitionOwner:
    return PartitionOwner(
        log=log,
        leases=store,
        clock=SystemClock(),
        owner=name,
        ttl_s=30.0,
        handler=ignore,
        observer=budget,
    )


async def test_each_of_n_workers_sends_at_most_its_share_of_the_bots_budget() -> None:
    log, store = MemoryPartitionLog(6), MemoryStore()
    pacers = [Pacer(), Pacer(), Pacer()]
    registries = [CollectorRegistry() for _ in pacers]
    budgets = [
        SharedBotBudget(BrokerMetrics(r, partitions=6), p)
        for r, p in zip(registries, pacers, strict=True)
    ]
    owners = [owner(f"w{i}", log, store, b) for i, b in enumerate(budgets)]
    for o in owners:
        await o.start()
    try:
        for o in owners:  # a round each after everybody joined: all see three
            await o.round()
        assert [p.per_bot_s for p in pacers] == pytest.approx([3 / 30] * 3)
        assert registries[0].get_sample_value("butler_broker_workers") == 3
        # Sends of one second at the bot's full rate: the three together stay within 30.
        slots = [p.reserve(chat) for p in pacers for chat in range(100, 130)]
        assert sum(1 for slot in slots if slot < 0.999) <= 30
        await owners[1].stop()
        await owners[2].stop()
        await owners[0].round()
        assert pacers[0].per_bot_s == pytest.approx(1 / 30)
    finally:
        for o in owners:
            await o.stop()
