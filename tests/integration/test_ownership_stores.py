"""Two engines on one store, as two services on one data directory or one MongoDB: each built
by the real wiring (its own connection, its own owner id, store leases renewed by the real
loop), a slow model over HTTP, messages for the same users told to both at once. Every
message is answered exactly once, by whichever engine serves its user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from actors.registry import Accepted
from adapters.bootstrap import wiring
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports, open_app
from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.ports import Store
from tests.fakes import CollectingSink, FakeTranscriber
from tests.support.openai_server import OpenAIServer
from tests.support.secantus import SecantusServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

USERS = 8
MESSAGES = 3  # per user, told alternately to each engine
TTL_S = 1.0  # renewed every third of a second by the loop itself


@pytest.fixture(params=["sqlite", "mongodb-protocol"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[Store]]:
    """Opens one more connection to the same store (a file, or a fresh database)."""
    if request.param == "sqlite":
        path = tmp_path / "butler.sqlite3"
        return lambda: SqliteStore.open(path)
    server: SecantusServer = request.getfixturevalue("secantus")
    uri = server.uri(f"owners_{uuid.uuid4().hex[:12]}")
    return lambda: MongoStore.open(uri)


@asynccontextmanager
async def engine(settings: Settings, store: Store, sink: CollectingSink) -> AsyncIterator[App]:
    ports = Ports(store=store, transcriber=FakeTranscriber())
    async with open_app(settings, sink=sink, ports=ports, recover=True) as app:
        yield app


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():  # noqa: ASYNC110 - polls the store, with a deadline
                await asyncio.sleep(0.05)  # noqa: TID251 - polls a condition, with a deadline
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def replies_by_message(store: Store, users: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for user_id in users:
        events = await store.events_before(user_id, keep_last=0)
        for event in events:
            if event.role == "user":
                counts.setdefault(event.id, 0)
        for event in events:
            if event.role == "assistant":
                counts[event.reply_to] = counts.get(event.reply_to, 0) + 1
    return counts


async def test_two_engines_on_one_store_answer_every_message_once(
    open_store: Callable[[], Awaitable[Store]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes, as on two hosts: one pid here would read as each other's dead past self.
    names = iter(["engine-a.test:101:a", "engine-b.test:102:b"])
    monkeypatch.setattr(wiring, "process_owner_id", lambda: next(names))
    base = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path / "data")})
    users = [f"user-{i}" for i in range(USERS)]
    async with AsyncExitStack() as stack, OpenAIServer(mode="slow", slow_delay=0.2) as model:
        settings = replace(
            base,
            llm_urls=(model.base_url,),
            llm_retries=0,
            lease_ttl_s=TTL_S,
            # One turn per message (no coalescing window), so replies are counted per message.
            actors=replace(base.actors, coalesce_s=0.0),
        )
        stores = [await open_store() for _ in range(2)]
        for store in stores:
            stack.push_async_callback(store.close)
        sinks = [CollectingSink(), CollectingSink()]
        apps = [
            await stack.enter_async_context(engine(settings, store, sink))
            for store, sink in zip(stores, sinks, strict=True)
        ]
        tells = [
            apps[(u + m) % 2].registry.tell_text(user_id, f"message {m} of {user_id}")
            for m in range(MESSAGES)
            for u, user_id in enumerate(users)
        ]
        tickets = await asyncio.gather(*tells)  # every user claimed by both at once
        assert all(isinstance(t, Accepted) for t in tickets), tickets
        accepted = {t.event_id for t in tickets if isinstance(t, Accepted)}

        async def all_answered() -> bool:
            counts = await replies_by_message(stores[0], users)
            return set(counts) == accepted and all(counts.values())

        await until(all_answered, "every message to be answered")
        owners = {lease.owner for lease in await stores[0].leases("user:", now=apps[0].clock.now())}
        assert len(owners) <= 2
        handed = sum(
            app.metrics.get_sample_value(
                "butler_lease_claims_refused_total", {"outcome": "handed_over"}
            )
            or 0
            for app in apps
        )
        assert handed > 0  # some messages were told to the engine not serving their user
        counts = await replies_by_message(stores[1], users)
    assert counts == dict.fromkeys(accepted, 1), "a message got two replies, or none"
    delivered = [r.reply_to for sink in sinks for r in sink.replies]
    assert sorted(delivered) == sorted(accepted)  # each reply went out once, from its owner
