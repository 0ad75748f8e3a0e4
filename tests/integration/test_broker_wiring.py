"""`butler run` on a broker through the real wiring: three workers on one SQLite file and one
partition log (memory), one of them crashing mid-stream. Every message stored once and
answered once, in order per user; the dead worker's partitions move within the lease TTL."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import wiring
from adapters.bootstrap.service import serve
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports
from adapters.broker.memory import MemoryPartitionLog
from adapters.storage.sqlite import SqliteStore
from engine.partitions import partition_of
from engine.ports import Store
from tests.fakes import FakeTranscriber
from tests.support.bot_api_server import TOKEN, BotApiStandIn
from tests.support.openai_server import OpenAIServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 20
MESSAGES = 10  # per user: 200 updates
PARTITIONS = 8
TTL_S = 1.5
WORKERS = ["worker-a.test:101:a", "worker-b.test:102:b", "worker-c.test:103:c"]
"""Owner ids as of three hosts: one pid here would read as each other's dead past self."""


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():  # noqa: ASYNC110 - polls the store, with a deadline
                await asyncio.sleep(0.05)  # noqa: TID251 - polls a condition, with a deadline
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def update(update_id: int, user: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": "U"},
            "from": {"id": user, "is_bot": False, "first_name": "U", "language_code": "en"},
            "text": text,
        },
    }


async def user_events(store: Store, user: int) -> list[Any]:
    return list(await store.events_before(f"tg:{user}", keep_last=0))


async def test_three_workers_survive_a_crash_without_loss_or_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(WORKERS)
    monkeypatch.setattr(wiring, "process_owner_id", lambda: next(names))
    log = MemoryPartitionLog(PARTITIONS)
    path = tmp_path / "butler.sqlite3"
    async with BotApiStandIn() as api, OpenAIServer(mode="slow", slow_delay=0.02) as model:
        base = Settings.from_env(
            {
                "BUTLER_DATA_DIR": str(tmp_path / "data"),
                "BUTLER_TELEGRAM_TOKEN": TOKEN,
                "BUTLER_TELEGRAM_API_URL": api.url,
                "BUTLER_BROKER_URL": "nats://127.0.0.1:1",  # never dialled: the log is injected
                "BUTLER_RATE_LIMIT_PER_MINUTE": "0",
            }
        )
        settings = replace(
            base,
            llm_urls=(model.base_url,),
            llm_retries=0,
            lease_ttl_s=TTL_S,
            actors=replace(base.actors, coalesce_s=0.0),  # one reply per message
        )
        stores = [await SqliteStore.open(path) for _ in range(3)]
        stops = [asyncio.Event() for _ in range(3)]
        apps: list[App] = []
        tasks = [
            asyncio.create_task(
                serve(
                    settings,
                    ports=Ports(store=store, transcriber=FakeTranscriber(), partition_log=log),
                    stop=stop,
                    on_ready=apps.append,
                    admin=False,
                )
            )
            for store, stop in zip(stores, stops, strict=True)
        ]
        try:
            await until(lambda: _true(len(apps) == 3), "three workers", 20)
            checker = stores[0]

            async def owners() -> dict[int, str]:
                leases = await checker.leases("partition:", now=apps[0].clock.now())
                return {int(x.key.removeprefix("partition:")): x.owner for x in leases}

            async def split() -> bool:
                held = await owners()
                return len(held) == PARTITIONS and len(set(held.values())) == 3

            await until(split, "partitions split among three workers", 10)

            ids = itertools.count(1)
            # Unreadable updates are confirmed and skipped, never retried forever.
            await log.publish(0, next(ids), b"\xffnot json")
            bad_id = next(ids)
            bad = {"update_id": bad_id, "message": {"chat": "no such shape"}}
            await log.publish(1, bad_id, json.dumps(bad).encode())
            for m in range(MESSAGES):
                for user in range(1, USERS + 1):
                    update_id = next(ids)
                    payload = json.dumps(update(update_id, user, f"message {m}")).encode()
                    await log.publish(partition_of(str(user), PARTITIONS), update_id, payload)
                if m == MESSAGES // 2:
                    # The crash: no lease is released, so the others wait for the expiries.
                    victim = (await owners())[0]
                    k = WORKERS.index(victim)
                    monkeypatch.setattr(stores[k], "release_lease", _no_release)
                    crashed_at = time.monotonic()
                    tasks[k].cancel()
                    await asyncio.gather(tasks[k], return_exceptions=True)

            async def survivors_own_all() -> bool:
                held = await owners()
                return len(held) == PARTITIONS and victim not in held.values()

            await until(survivors_own_all, "the victim's partitions taken over", 3 * TTL_S)
            assert time.monotonic() - crashed_at < 2 * TTL_S + 1.0

            async def all_answered() -> bool:
                for user in range(1, USERS + 1):
                    events = await user_events(checker, user)
                    asked = [e for e in events if e.role == "user"]
                    answers = {e.reply_to for e in events if e.role == "assistant"}
                    if len(asked) < MESSAGES or not {e.id for e in asked} <= answers:
                        return False
                return True

            await until(all_answered, "every message answered", 25)
            for user in range(1, USERS + 1):
                events = await user_events(checker, user)
                asked = [e for e in events if e.role == "user"]
                assert [e.content for e in asked] == [f"message {m}" for m in range(MESSAGES)]
                replies = [e.reply_to for e in events if e.role == "assistant"]
                assert sorted(replies) == sorted(e.id for e in asked), user  # once each

            async def all_confirmed() -> bool:
                return sum([await log.lag(p) for p in range(PARTITIONS)]) == 0

            await until(all_confirmed, "every update confirmed", 5)

            def total(name: str, **labels: str) -> float:
                return sum(app.metrics.get_sample_value(name, labels) or 0.0 for app in apps)

            assert total("butler_broker_updates_total", outcome="poisoned") == 2
            assert total("butler_broker_updates_total", outcome="handled") >= USERS * MESSAGES
            assert total("butler_broker_partition_takeovers_total") >= 1
            assert total("butler_broker_lease_renewals_total", outcome="ok") > 0
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for store in stores:
                await store.close()


async def _no_release(lease: object) -> None:
    """A crashed process frees nothing."""


async def _true(value: bool) -> bool:
    return value
