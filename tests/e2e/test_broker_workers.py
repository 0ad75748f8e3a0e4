"""Scale-out end to end: a `butler front` polling a Bot API stand-in, three `butler run` workers
on a 3-node JetStream cluster and one MongoDB-protocol store, 2,000 messages from 200 users;
one worker is SIGKILLed in the middle of the stream.

Judged from the store, not from deliveries: every message stored once, in each user's order,
each answered by exactly one reply; the victim's partitions served again within the lease's
time to live; an update that comes again under another update id (a Telegram redelivery after
the duplicate window) is recognised and answered once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.storage.mongo import MongoStore
from tests.support.bot_api_server import BotApiStandIn
from tests.support.broker_stack import (
    Proc,
    Stack,
    effects,
    owner_pid,
    partition_owners,
    spread_over,
)
from tests.support.nats_cluster import NatsCluster
from tests.support.openai_server import OpenAIServer
from tests.support.secantus import SecantusServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 200
PER_USER = 10
PARTITIONS = 12
# The default is 15 s. Ten still shows a takeover within the time to live, and leaves two
# loaded cores (three workers, three NATS nodes, the store, the stand-ins) room to renew: at
# 3 s, user leases ran out mid-turn for want of CPU, and a takeover took 5 s after expiry.
TTL_S = 10.0
FIRST_USER = 7_000_000


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A cluster of its own: the stream's name is the workers' default, kept apart from others."""
    nats = NatsCluster(tmp_path / "nats", nodes=3)
    await asyncio.to_thread(nats.start)
    try:
        yield nats
    finally:
        await asyncio.to_thread(nats.stop)


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[SecantusServer]:
    """A server of its own: three workers and a kill must not slow the session's server."""
    server = SecantusServer(tmp_path / "secantus")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.25)  # noqa: TID251 - polls the store, with a deadline


async def test_a_worker_killed_mid_stream_loses_nothing_and_answers_nothing_twice(
    tmp_path: Path, cluster: NatsCluster, mongo: SecantusServer
) -> None:
    uri = mongo.uri(f"scale_{uuid.uuid4().hex[:8]}")
    users = [FIRST_USER + i for i in range(USERS)]
    user_ids = [f"tg:{u}" for u in users]
    async with BotApiStandIn() as api, OpenAIServer() as llm:
        store = await MongoStore.open(uri)
        stack = Stack(
            tmp_path / "stack", api, llm, uri, cluster.urls, partitions=PARTITIONS, ttl_s=TTL_S
        )
        try:
            workers = [await stack.worker(f"worker-{i}") for i in range(3)]
            pids = {w.pid for w in workers}

            await until(
                lambda: spread_over(store, pids, PARTITIONS),
                "the partitions to be spread over the three workers",
                60,
            )
            await stack.front()
            first_message: dict[int, int] = {}  # the stand-in's message id is the update id
            for k in range(PER_USER):
                for user in users:
                    update_id = await api.send_text(user, f"message {k} of {user}")
                    first_message.setdefault(user, update_id)
            total = USERS * PER_USER

            await api.wait_until(lambda: len(api.sent) >= total // 3, 300)
            owners = await partition_owners(store)
            victim: Proc = max(
                workers, key=lambda w: sum(owner_pid(o) == w.pid for o in owners.values())
            )
            victim.kill()
            killed_at = time.monotonic()
            await victim.proc.wait()
            survivors = pids - {victim.pid}
            # What the victim held when it died, and when that runs out (it renews no more).
            left = [
                lease
                for prefix in ("worker:", "partition:")
                for lease in await store.leases(prefix, now=datetime.now(UTC))
                if owner_pid(lease.owner) == victim.pid
            ]
            runs_out = max(lease.expires_at for lease in left)

            async def served_again() -> bool:
                owners = await partition_owners(store)
                return (
                    len(owners) == PARTITIONS
                    and {owner_pid(o) for o in owners.values()} <= survivors
                )

            await until(served_again, "the victim's partitions to be served again", 30)
            moved_after = time.monotonic() - killed_at
            after_expiry = (datetime.now(UTC) - runs_out).total_seconds()

            async def all_answered() -> bool:
                found = await effects(store, user_ids)
                return found.stored >= total and all(found.replies.values())

            await api.wait_until(lambda: len(api.sent) >= total, 600)
            await until(all_answered, "every message to be stored and answered", 120)
            found = await effects(store, user_ids)
            for user in users:
                expected = [f"message {k} of {user}" for k in range(PER_USER)]
                assert found.messages[f"tg:{user}"] == expected, f"order or loss for {user}"
            assert found.stored == total
            twice = {m: n for m, n in found.replies.items() if n != 1}
            assert not twice, f"messages answered other than once: {len(twice)}"
            # The victim's leases run out at most a TTL after its last renewal (so after the
            # kill); the survivors wake just after that and claim: the partitions are served
            # again within a TTL of the leases running out, so within two of the kill.
            print(f"moved {moved_after:.1f} s after the kill, {after_expiry:.1f} s after expiry")
            assert after_expiry <= TTL_S, (moved_after, after_expiry)

            # Telegram sends an update again after the stream's duplicate window: another
            # update id, the same message. The store's origin key recognises it.
            first = users[0]
            repeat = {
                "update_id": api.next_id(),
                "message": {
                    "message_id": first_message[first],
                    "date": int(time.time()),
                    "chat": {"id": first, "type": "private", "first_name": "U"},
                    "from": {"id": first, "is_bot": False, "first_name": "U"},
                    "text": f"message 0 of {first}",
                },
            }
            await api.push(repeat)
            sentinel = "one more, after the repeat"
            await api.send_text(first, sentinel)  # same user, same partition: after the repeat
            await api.wait_until(lambda: len(api.texts(first)) >= PER_USER + 1, 60)

            async def sentinel_answered() -> bool:
                done = await effects(store, [f"tg:{first}"])
                return done.messages[f"tg:{first}"][-1:] == [sentinel] and all(
                    done.replies.values()
                )

            await until(sentinel_answered, "the message after the repeat", 60)
            done = await effects(store, [f"tg:{first}"])
            assert done.messages[f"tg:{first}"] == [
                *[f"message {k} of {first}" for k in range(PER_USER)],
                sentinel,
            ]
            assert all(n == 1 for n in done.replies.values())
        finally:
            await stack.close()
            await store.close()
