"""The `PartitionLog` contract, run against the memory log and the NATS JetStream log on a
real three-node cluster (a fresh stream and subject prefix per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from adapters.broker.memory import MemoryPartitionLog
from adapters.broker.nats import NatsPartitionLog
from engine.ports import PartitionLog
from tests.support.nats_cluster import NatsCluster

pytestmark = pytest.mark.anyio

PARTITIONS = 4


@pytest.fixture(params=["memory", "nats"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[PartitionLog]:
    if request.param == "memory":
        memory = MemoryPartitionLog(PARTITIONS)
        yield memory
        await memory.close()
        return
    cluster: NatsCluster = request.getfixturevalue("nats_cluster")
    tag = uuid.uuid4().hex[:10]
    nats_log = await NatsPartitionLog.connect(
        cluster.urls,
        partitions=PARTITIONS,
        replicas=3,
        stream=f"T_{tag}",
        subjects=f"t{tag}.in",
        ack_wait_s=30.0,
        batch=4,
    )
    nats_log.retry_after_s = 0.1
    nats_log.idle_fetch_s = 0.2
    yield nats_log
    await nats_log.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
                await asyncio.sleep(0.01)  # noqa: TID251 - polls a condition, with a deadline
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class Recorder:
    """A handler that records what it is given and confirms unless told to refuse."""

    def __init__(self, refuse_once: set[bytes] | None = None) -> None:
        self.seen: list[bytes] = []
        self.refuse_once = set(refuse_once or ())

    async def __call__(self, payload: bytes) -> bool:
        self.seen.append(payload)
        if payload in self.refuse_once:
            self.refuse_once.discard(payload)
            return False
        return True


async def consuming(
    log: PartitionLog, partition: int, handle: Callable[[bytes], Awaitable[bool]]
) -> tuple[asyncio.Task[None], list[bool]]:
    holding = [True]
    task = asyncio.create_task(log.consume(partition, handle, holding=lambda: holding[0]))
    return task, holding


async def stop(task: asyncio.Task[None], holding: list[bool]) -> None:
    holding[0] = False
    async with asyncio.timeout(10):
        await task


async def test_publish_then_consume_in_order_per_partition(log: PartitionLog) -> None:
    for i in range(10):
        await log.publish(i % 2, 100 + i, f"u{i}".encode())
    even, odd = Recorder(), Recorder()
    t0, h0 = await consuming(log, 0, even)
    t1, h1 = await consuming(log, 1, odd)
    await until(lambda: len(even.seen) == 5 and len(odd.seen) == 5, "both partitions")
    # Published after the consumers started: they wait for new updates.
    await log.publish(0, 200, b"late")
    await until(lambda: even.seen[-1:] == [b"late"], "the late update")
    await stop(t0, h0)
    await stop(t1, h1)
    assert even.seen == [b"u0", b"u2", b"u4", b"u6", b"u8", b"late"]
    assert odd.seen == [b"u1", b"u3", b"u5", b"u7", b"u9"]
    assert await log.lag(0) == 0


async def test_a_repeated_update_id_is_stored_once(log: PartitionLog) -> None:
    await log.publish(2, 7, b"a")
    await log.publish(2, 7, b"a")
    await log.publish(2, 8, b"b")
    assert await log.lag(2) == 2
    rec = Recorder()
    task, holding = await consuming(log, 2, rec)
    await until(lambda: len(rec.seen) == 2, "two updates")
    await stop(task, holding)
    assert rec.seen == [b"a", b"b"]


async def test_a_refused_update_comes_again_before_later_ones(log: PartitionLog) -> None:
    for i, payload in enumerate([b"a", b"b", b"c", b"d"]):
        await log.publish(0, 300 + i, payload)
    rec = Recorder(refuse_once={b"b"})
    task, holding = await consuming(log, 0, rec)
    await until(lambda: b"d" in rec.seen, "the last update")
    await stop(task, holding)
    assert rec.seen == [b"a", b"b", b"b", b"c", b"d"]
    assert await log.lag(0) == 0


async def test_a_take_over_gets_the_unconfirmed_update_first(log: PartitionLog) -> None:
    for i, payload in enumerate([b"a", b"b", b"c"]):
        await log.publish(1, 400 + i, payload)
    first_seen: list[bytes] = []
    release = asyncio.Event()

    async def stuck(payload: bytes) -> bool:
        first_seen.append(payload)
        if payload == b"b":
            await release.wait()
        return True

    t1, _ = await consuming(log, 1, stuck)
    await until(lambda: first_seen == [b"a", b"b"], "the first consumer to hold b")
    second = Recorder()
    t2, h2 = await consuming(log, 1, second)
    await until(lambda: second.seen == [b"b", b"c"], "the take-over to get b then c", 5.0)
    release.set()
    async with asyncio.timeout(10):
        await t1  # the first consumer stops by itself
    assert first_seen == [b"a", b"b"]
    await stop(t2, h2)
    assert await log.lag(1) == 0


async def test_holding_false_stops_before_the_next_update(log: PartitionLog) -> None:
    for i in range(3):
        await log.publish(3, 500 + i, f"x{i}".encode())
    holding = [True]
    seen: list[bytes] = []

    async def handle(payload: bytes) -> bool:
        seen.append(payload)
        holding[0] = False  # the lease is lost while handling the first update
        return True

    async with asyncio.timeout(10):
        await log.consume(3, handle, holding=lambda: holding[0])
    assert seen == [b"x0"]
    assert await log.lag(3) == 2


async def test_lag_counts_unconfirmed_updates_and_partitions_are_independent(
    log: PartitionLog,
) -> None:
    assert await log.lag(0) == 0
    for i in range(3):
        await log.publish(0, 600 + i, b"p0")
    await log.publish(2, 700, b"p2")
    assert [await log.lag(p) for p in range(PARTITIONS)] == [3, 0, 1, 0]
    rec = Recorder()
    task, holding = await consuming(log, 2, rec)
    await until(lambda: rec.seen == [b"p2"], "partition 2")
    await until_lag(log, 2, 0)
    await stop(task, holding)
    assert [await log.lag(p) for p in range(PARTITIONS)] == [3, 0, 0, 0]


async def until_lag(log: PartitionLog, partition: int, expected: int) -> None:
    async with asyncio.timeout(10):
        while await log.lag(partition) != expected:  # noqa: ASYNC110 - polls the broker, with a deadline
            await asyncio.sleep(0.02)  # noqa: TID251 - polls the lag, with a deadline


async def test_take_overs_with_nothing_new_between_them_replay_nothing(log: PartitionLog) -> None:
    # Confirmed by a first consumer; then two take-overs that see no update (a rebalance
    # and another): the third consumer gets only what came after, not the stream again.
    for i, payload in enumerate([b"a", b"b"]):
        await log.publish(3, 500 + i, payload)
    first = Recorder()
    task, holding = await consuming(log, 3, first)
    await until(lambda: len(first.seen) == 2, "the first two")
    await stop(task, holding)
    idle = Recorder()
    for _ in range(2):  # consume() takes over before it asks holding(); stop awaits it
        task, holding = await consuming(log, 3, idle)
        await stop(task, holding)
    await log.publish(3, 502, b"c")
    last = Recorder()
    task, holding = await consuming(log, 3, last)
    await until(lambda: len(last.seen) >= 1, "the new update")
    await stop(task, holding)
    assert idle.seen == []
    assert last.seen == [b"c"]
