"""`butler front` as real processes between the Bot API stand-in and a real three-node NATS
cluster: updates land on their partitions once each, an update is confirmed to Telegram only
after the broker holds it, polling front doors take turns, and the webhook answers 200 only
after publishing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.broker.nats import NatsPartitionLog
from engine.partitions import partition_of
from tests.e2e.test_chat_cli import ROOT
from tests.support.bot_api_server import TOKEN, BotApiStandIn
from tests.support.nats_cluster import NatsCluster
from tests.support.telegram_emulator import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PARTITIONS = 4
TTL_S = 3.0
USERS = range(6_100_000, 6_100_006)


@pytest.fixture
def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster] | Any:
    nodes = NatsCluster(tmp_path / "nats", nodes=3)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@asynccontextmanager
async def front(
    api: BotApiStandIn, cluster: NatsCluster, log_file: Path, **extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`butler front` as a process; yields it and its health/metrics URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "BUTLER_BROKER_URL": ",".join(cluster.urls),
        "BUTLER_BROKER_PARTITIONS": str(PARTITIONS),
        "BUTLER_BROKER_REPLICAS": "3",
        "BUTLER_TELEGRAM_TOKEN": TOKEN,
        "BUTLER_TELEGRAM_API_URL": api.url,
        "BUTLER_TELEGRAM_POLL_TIMEOUT_S": "1",
        "BUTLER_LEASE_TTL_S": str(TTL_S),
        "BUTLER_ADMIN_ADDR": f"127.0.0.1:{port}",
        "BUTLER_DATA_DIR": str(log_file.parent / "data"),
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    with log_file.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.entrypoints.cli", "front",
            cwd=ROOT, env=env, stderr=out, stdout=out,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await until_http(url + "/healthz", 200, 30)
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)


async def until_http(url: str, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as response:
                    if response.status == status:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer {status}")
            await asyncio.sleep(0.05)  # noqa: TID251 - polls the front door, with a deadline


async def leader(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("butler_front_poller_leader "):
                return float(line.split()[1])
    return -1.0


async def until(check: Any, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # noqa: TID251 - polls a condition, with a deadline


async def on_partitions(cluster: NatsCluster) -> dict[int, list[int]]:
    """Every update id the stream holds, per partition, in order (consumed: read it once)."""
    log = await NatsPartitionLog.connect(cluster.urls, partitions=PARTITIONS, replicas=3)
    log.idle_fetch_s = 0.2
    try:
        return {partition: await _read(log, partition) for partition in range(PARTITIONS)}
    finally:
        await log.close()


async def _read(log: NatsPartitionLog, partition: int) -> list[int]:
    ids: list[int] = []
    expected = await log.lag(partition)

    async def handle(payload: bytes) -> bool:
        ids.append(json.loads(payload)["update_id"])
        return True

    await log.consume(partition, handle, holding=lambda: len(ids) < expected)
    return ids


def expected_partitions(ids_by_user: dict[int, list[int]]) -> dict[int, list[int]]:
    want: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for user, ids in ids_by_user.items():
        want[partition_of(user, PARTITIONS)].extend(ids)
    return {p: sorted(ids) for p, ids in want.items()}


async def send_round(api: BotApiStandIn, ids: dict[int, list[int]], rounds: int = 2) -> None:
    for _ in range(rounds):
        for user in USERS:
            ids.setdefault(user, []).append(await api.send_text(user, "hi"))


def confirmed(api: BotApiStandIn, ids: dict[int, list[int]]) -> Any:
    last = max(i for chain in ids.values() for i in chain)

    async def check() -> bool:
        return any(o is not None and o > last for o in api.offsets)

    return check


async def test_updates_land_on_their_partitions_once_each(
    api: BotApiStandIn, cluster: NatsCluster, tmp_path: Path
) -> None:
    ids: dict[int, list[int]] = {}
    async with front(api, cluster, tmp_path / "front.log") as (proc, _):
        await send_round(api, ids)
        await api.push(dict(api.pending[0]))  # Telegram sent one twice
        await api.push({"no_update_id": True})  # nothing can read it: skipped, not stuck
        await until(confirmed(api, ids), "every update confirmed", 30)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert await on_partitions(cluster) == expected_partitions(ids)


async def test_nothing_is_confirmed_while_the_broker_is_down(
    api: BotApiStandIn, cluster: NatsCluster, tmp_path: Path
) -> None:
    before: dict[int, list[int]] = {}
    async with front(api, cluster, tmp_path / "front.log") as (_, url):
        await send_round(api, before, rounds=1)
        await until(confirmed(api, before), "the first updates confirmed", 30)
        for i in range(3):
            cluster.kill(i)
        during: dict[int, list[int]] = {}
        await send_round(api, during, rounds=1)
        first = min(i for chain in during.values() for i in chain)

        async def stopped_or_refused() -> bool:
            # The lease cannot be renewed (the poller stops) or a publish was refused.
            return await leader(url) == 0.0

        await until(stopped_or_refused, "the front door to notice the broker is gone", 30)
        assert all(o is None or o <= first for o in api.offsets)
        for i in range(3):
            cluster.start_node(i, wait=False)
        cluster.wait_ready()
        await until(confirmed(api, during), "the updates confirmed after the broker is back", 60)
    everything = {u: before[u] + during[u] for u in USERS}
    assert await on_partitions(cluster) == expected_partitions(everything)


async def test_a_second_polling_front_door_takes_over_within_the_ttl(
    api: BotApiStandIn, cluster: NatsCluster, tmp_path: Path
) -> None:
    ids: dict[int, list[int]] = {}
    async with (
        front(api, cluster, tmp_path / "a.log") as (a, a_url),
        front(api, cluster, tmp_path / "b.log") as (b, b_url),
    ):

        async def one_leader() -> bool:
            return sorted([await leader(a_url), await leader(b_url)]) == [0.0, 1.0]

        await until(one_leader, "exactly one poller", 15)
        await send_round(api, ids, rounds=1)
        await until(confirmed(api, ids), "the first round confirmed", 30)
        holder, holder_url, other_url = (
            (a, a_url, b_url) if await leader(a_url) == 1.0 else (b, b_url, a_url)
        )
        holder.kill()
        await holder.wait()
        killed_at = time.monotonic()
        await send_round(api, ids, rounds=1)

        async def other_leads() -> bool:
            return await leader(other_url) == 1.0

        await until(other_leads, "the other front door to take the lease", TTL_S + 5)
        await until(confirmed(api, ids), "the second round confirmed", 30)
        assert time.monotonic() - killed_at < TTL_S + 10
        assert holder_url != other_url
    assert await on_partitions(cluster) == expected_partitions(ids)


async def test_the_webhook_answers_200_after_publishing_and_503_without_a_broker(
    api: BotApiStandIn, cluster: NatsCluster, tmp_path: Path
) -> None:
    port = free_port()
    hook = f"http://127.0.0.1:{port}/hook"
    env = {
        "BUTLER_WEBHOOK_URL": hook,
        "BUTLER_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        "BUTLER_WEBHOOK_SECRET": "s3cret-token",
    }
    user = USERS[0]
    update = {
        "update_id": 9001,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "text": "hi",
        },
    }
    good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
    async with front(api, cluster, tmp_path / "front.log", **env), aiohttp.ClientSession() as http:
        async with http.post(hook, json=update, headers=good) as response:
            assert response.status == 200
        # 200 came after the publish: the stream holds it now.
        assert await on_partitions(cluster) == expected_partitions({user: [9001]})
        async with http.post(
            hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "x"}
        ) as r:
            assert r.status == 401
        async with http.post(hook, data=b"{not json", headers=good) as response:
            assert response.status == 400
        for i in range(3):
            cluster.kill(i)
        update["update_id"] = 9002
        async with http.post(hook, json=update, headers=good) as response:
            assert response.status == 503
