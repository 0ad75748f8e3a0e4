"""`PartitionOwner`: fair shares, takeover after a crash, hand-over on a clean stop, rebalance
on a join, and every update handled once and in order, never by two workers at once."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from actors.partitions import PartitionOwner
from adapters.bootstrap.clock import SystemClock
from adapters.broker.memory import MemoryPartitionLog
from adapters.storage.memory import MemoryStore
from engine.partitions import partition_of
from engine.ports import Handler
from tests.fakes import ManualClock

pytestmark = pytest.mark.anyio

TTL = 0.6
PARTITIONS = 16


async def until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
                await asyncio.sleep(0.01)  # noqa: TID251 - polls a condition, with a deadline
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@dataclass
class Recorder:
    """Who handled which update of which user; which workers were inside a handler at once."""

    handled: list[tuple[str, int, int]] = field(default_factory=list)
    """(owner, user, seq) in handling order."""
    inside: dict[int, str] = field(default_factory=dict)
    overlaps: list[int] = field(default_factory=list)
    done: set[tuple[int, int]] = field(default_factory=set)

    def handler(self, owner: str, log: MemoryPartitionLog) -> Handler:
        async def handle(payload: bytes) -> bool:
            item = json.loads(payload)
            part = partition_of(str(item["user"]), log.partitions)
            if part in self.inside and self.inside[part] != owner:
                self.overlaps.append(part)
            self.inside[part] = owner
            try:
                await asyncio.sleep(0)  # noqa: TID251 - yields to the other workers
                self.handled.append((owner, item["user"], item["seq"]))
                self.done.add((item["user"], item["seq"]))  # idempotent
                return True
            finally:
                self.inside.pop(part, None)

        return handle


def worker(
    name: str, log: MemoryPartitionLog, store: MemoryStore, recorder: Recorder
) -> PartitionOwner:
    return PartitionOwner(
        log=log,
        leases=store,
        clock=SystemClock(),
        owner=name,
        ttl_s=TTL,
        handler=recorder.handler(name, log),
    )


async def publish(
    log: MemoryPartitionLog, ids: itertools.count[int], users: int, each: int, first: int = 0
) -> None:
    for seq in range(first, first + each):
        for user in range(users):
            payload = json.dumps({"user": user, "seq": seq}).encode()
            await log.publish(partition_of(str(user), log.partitions), next(ids), payload)


def all_owned(owners: list[PartitionOwner]) -> list[int]:
    return sorted(p for owner in owners for p in owner.owned())


async def test_one_worker_owns_every_partition() -> None:
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    async with worker("a", log, store, recorder) as a:
        assert a.owned() == list(range(PARTITIONS))
        snap = a.snapshot()
        assert (snap.fair_share, snap.workers) == (PARTITIONS, 1)
        await publish(log, itertools.count(1), users=5, each=3)
        await until(lambda: len(recorder.done) == 15, "every update handled")
    leases = await store.leases("partition:", now=SystemClock().now())
    assert leases == []  # a clean stop frees them


async def test_three_workers_split_fairly() -> None:
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    owners = [worker(name, log, store, recorder) for name in "abc"]
    for owner in owners:
        await owner.start()
    try:
        await until(
            lambda: (
                sorted(len(o.owned()) for o in owners) == [5, 5, 6]
                and all_owned(owners) == list(range(PARTITIONS))
            ),
            "a 6/5/5 split",
        )
    finally:
        for owner in owners:
            await owner.stop()


async def test_a_crashed_worker_loses_its_partitions_within_the_ttl() -> None:
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    owners = [worker(name, log, store, recorder) for name in "abc"]
    for owner in owners:
        await owner.start()
    try:
        await until(lambda: all_owned(owners) == list(range(PARTITIONS)), "all owned")
        ids = itertools.count(1)
        await publish(log, ids, users=30, each=2)
        victim = owners.pop(0)
        await victim.abandon()
        await publish(log, ids, users=30, each=2, first=2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(
            lambda: all_owned(owners) == list(range(PARTITIONS)), "survivors own all", 3 * TTL
        )
        assert loop.time() - started < 2 * TTL
        await until(lambda: len(recorder.done) == 30 * 4, "every update handled")
        assert sorted(len(o.owned()) for o in owners) == [8, 8]
        assert not recorder.overlaps
    finally:
        for owner in owners:
            await owner.stop()


async def test_a_clean_stop_hands_over_at_once() -> None:
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    a, b = worker("a", log, store, recorder), worker("b", log, store, recorder)
    await a.start()
    await b.start()
    try:
        await until(lambda: len(a.owned()) == len(b.owned()) == 8, "an 8/8 split")
        await a.stop()
        await b.round()  # the next round, not the lease's expiry
        assert b.owned() == list(range(PARTITIONS))
    finally:
        await b.stop()


async def test_a_joining_worker_gets_its_share_and_order_holds() -> None:
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    ids = itertools.count(1)
    a = worker("a", log, store, recorder)
    await a.start()
    joined: list[PartitionOwner] = []
    try:
        await publish(log, ids, users=40, each=5)
        await until(lambda: len(recorder.done) > 20, "handling under way")
        for name in "bc":
            joiner = worker(name, log, store, recorder)
            await joiner.start()
            joined.append(joiner)
        owners = [a, *joined]
        await until(
            lambda: (
                sorted(len(o.owned()) for o in owners) == [5, 5, 6]
                and all_owned(owners) == list(range(PARTITIONS))
            ),
            "a 6/5/5 split after the joins",
        )
        await publish(log, ids, users=40, each=5, first=5)
        await until(lambda: len(recorder.done) == 400, "every update handled")
    finally:
        for owner in [a, *joined]:
            await owner.stop()
    assert not recorder.overlaps
    assert {owner for owner, _, _ in recorder.handled} >= {"a", "b"}
    per_user: dict[int, list[int]] = {}
    for _, user, seq in recorder.handled:
        per_user.setdefault(user, []).append(seq)
    for user, seqs in per_user.items():
        # Handled in order; a repeat (taken over mid-handling) only ever repeats the last one.
        firsts = [s for i, s in enumerate(seqs) if s not in seqs[:i]]
        assert firsts == list(range(10)), user


async def test_the_next_round_comes_just_after_a_dead_workers_lease_runs_out() -> None:
    clock = ManualClock()
    log, store, recorder = MemoryPartitionLog(PARTITIONS), MemoryStore(), Recorder()
    ttl = 30.0

    def on(name: str) -> PartitionOwner:
        return PartitionOwner(
            log=log,
            leases=store,
            clock=clock,
            owner=name,
            ttl_s=ttl,
            handler=recorder.handler(name, log),
        )

    a, b = on("a"), on("b")
    try:
        for owner in (a, b, a, b):  # a takes all, b joins, a hands back 8, b claims them
            await owner.round()
        assert len(a.owned()) == len(b.owned()) == 8  # then b stops renewing: it died
        started = clock.now()
        assert a.next_round_in(started) == pytest.approx(ttl / 3)  # b's leases: 30 s left
        clock.advance(25)
        started = clock.now()
        await a.round()
        # b's membership runs out 5 s from now, before the periodic round 10 s from now.
        assert a.next_round_in(started) == pytest.approx(5.05)
        clock.advance(5.05)
        started = clock.now()
        await a.round()
        assert a.owned() == list(range(PARTITIONS))
        assert a.next_round_in(started) == pytest.approx(ttl / 3)
    finally:
        await a.abandon()
        await b.abandon()
