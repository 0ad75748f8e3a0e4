"""The one erase path, from both doors (Telegram `/forget` and the admin's reset with erase):
everything of the user goes, nothing waiting is answered afterwards, and whoever asked the
actor for something is told; a message after the erase starts afresh."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from actors.registry import Accepted
from adapters.admin.server import serve_admin
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports, open_app
from adapters.telegram.chat_actions import Typing
from adapters.telegram.handlers import FrontDoor
from adapters.telegram.intake import RateLimiter
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox
from engine.errors import ShuttingDown
from engine.messages import CompressMemory
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM
from tests.support.bot_api import FakeBotAPI, fake_bot

pytestmark = pytest.mark.anyio

TOKEN = "erase-test-token"
TELEGRAM_ID = 4242
USER = f"tg:{TELEGRAM_ID}"  # the user id `/forget` erases for this Telegram user
NEVER = datetime(2999, 1, 1, tzinfo=UTC)

Erase = Callable[[], Coroutine[None, None, None]]


@dataclass
class Engine:
    app: App
    store: MemoryStore
    llm: ScriptedLLM
    sink: CollectingSink


async def _until(predicate: Callable[[], object]) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    base = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    settings = dataclasses.replace(base, admin_addr=("127.0.0.1", 0), admin_token=TOKEN)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with open_app(settings, sink=sink, ports=Ports(store=store, llm=llm)) as app:
        yield Engine(app, store, llm, sink)


@pytest.fixture(params=["telegram-forget", "admin-reset-erase"])
async def erase(request: pytest.FixtureRequest, engine: Engine) -> AsyncIterator[Erase]:
    """The erase as each door starts it."""
    if request.param == "telegram-forget":
        metrics = TelegramMetrics(CollectorRegistry())
        bot = fake_bot(FakeBotAPI())
        outbox = Outbox(bot, metrics)
        typing = Typing(outbox, metrics)
        front = FrontDoor(
            registry=engine.app.registry,
            store=engine.store,
            clock=ManualClock(),
            outbox=outbox,
            typing=typing,
            metrics=metrics,
            limiter=RateLimiter(0, 1),
        )
        yield lambda: front.forget(TELEGRAM_ID)
        await typing.close()
        await bot.session.close()
        return
    async with (
        serve_admin(engine.app, admin_config(engine.app.settings)) as url,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):

        async def post() -> None:
            path = f"{url}/admin/actors/{USER}/reset"
            async with http.post(path, json={"erase": True}) as res:
                assert (res.status, await res.json()) == (
                    200,
                    {"reset": True, "erased": True, "state": "passive"},
                )

        yield post


async def _known_user(engine: Engine) -> None:
    """USER has talked once and has a summary: there is something to forget."""
    await engine.app.registry.tell_text(USER, "Меня зовут Брюс")
    await engine.sink.wait_for(1)
    profile = engine.store.profiles[USER]
    engine.store.profiles[USER] = profile.with_summary("Хозяин Брюс.", "", NEVER)


async def test_erase_forgets_everything_and_answers_nothing_that_waited(
    engine: Engine, erase: Erase
) -> None:
    store, llm, sink, registry = engine.store, engine.llm, engine.sink, engine.app.registry
    await _known_user(engine)
    await store.cache_answer("k-user", USER, "cached", expires_at=NEVER)
    await store.cache_answer("k-other", "tg:1", "someone else's", expires_at=NEVER)
    llm.gate = asyncio.Event()
    for text in ("в работе", "ждёт раз", "ждёт два"):
        await registry.tell_text(USER, text)
    _, compressed = await registry.ask(USER, CompressMemory(eager=True))
    await _until(lambda: len(llm.calls) == 2)  # "в работе" is in hand, held at the model
    actor = registry.get(USER)
    assert actor is not None

    erasing = asyncio.create_task(erase())
    await _until(lambda: actor.stopping)
    llm.gate.set()
    async with asyncio.timeout(5):
        await erasing
        with pytest.raises(ShuttingDown):  # told, not left waiting for ever
            await compressed

    assert [r.text for r in sink.replies[1:]] in ([], [r.text for r in sink.replies[1:2]])
    assert len(llm.calls) == 2  # the waiting messages never reached the model
    assert registry.get(USER) is None
    assert await store.get_profile(USER) is None
    assert not store.events.get(USER)
    assert await store.unanswered(USER) == []
    assert await store.owed_replies(USER) == []
    assert await store.cached_answer("k-user", now=datetime.now(UTC)) is None
    assert await store.cached_answer("k-other", now=datetime.now(UTC)) == "someone else's"

    await registry.tell_text(USER, "Кто я?")  # afresh: no summary, no old history
    replies = len(sink.replies)
    await sink.wait_for(replies + 1)
    prompt = " ".join(m.content for m in llm.calls[-1].messages)
    assert "Кто я?" in prompt
    for gone in ("Брюс", "в работе", "ждёт"):
        assert gone not in prompt
    assert [e.content for e in store.events[USER].values() if e.role == "user"] == ["Кто я?"]


async def test_a_message_during_the_erase_waits_and_starts_afresh(
    engine: Engine, erase: Erase
) -> None:
    store, llm, sink, registry = engine.store, engine.llm, engine.sink, engine.app.registry
    await _known_user(engine)
    llm.gate = asyncio.Event()
    await registry.tell_text(USER, "в работе")
    await _until(lambda: len(llm.calls) == 2)
    actor = registry.get(USER)
    assert actor is not None
    erasing = asyncio.create_task(erase())
    await _until(lambda: actor.stopping)
    meanwhile = asyncio.create_task(registry.tell_text(USER, "Я снова здесь"))
    await asyncio.sleep(0)  # noqa: TID251 - lets the message reach the erase's gate
    assert not meanwhile.done()  # held until the erase is over
    llm.gate.set()
    async with asyncio.timeout(5):
        await erasing
        ticket = await meanwhile
    assert isinstance(ticket, Accepted)
    await _until(lambda: any(r.reply_to == ticket.event_id for r in sink.replies))
    kept = [e.content for e in store.events[USER].values() if e.role == "user"]
    assert kept == ["Я снова здесь"]
    assert store.profiles[USER].memory_summary == ""
