"""Routers and intake on aiogram `Update` objects: the engine is real (registry, actors) with
fakes behind its ports; the Bot API is `FakeBotAPI`, so every call the bot makes is seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from prometheus_client import CollectorRegistry

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports, open_app
from adapters.telegram.chat_actions import Typing
from adapters.telegram.dispatch import Intake
from adapters.telegram.handlers import FrontDoor, build_router
from adapters.telegram.intake import RateLimiter
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, TelegramSink
from adapters.telegram.texts import text as tg_text
from engine.errors import StoreUnavailable
from engine.persona import variants
from tests.fakes import FakeTranscriber, ManualClock, MemoryStore, ScriptedLLM
from tests.support.bot_api import FakeBotAPI, fake_bot
from tests.support.telegram_emulator import FileServer

pytestmark = pytest.mark.anyio

USER = 7001


@dataclass
class Door:
    intake: Intake
    door: FrontDoor
    api: FakeBotAPI
    llm: ScriptedLLM
    store: MemoryStore
    app: App
    bot: Bot
    files: FileServer
    next_update: int = 1
    next_message: int = 1

    async def send(self, **fields: Any) -> bool:
        """Deliver one update built from `fields` (a message by default); its handled flag."""
        kind = fields.pop("kind", "message")
        body = {
            "message_id": fields.pop("message_id", self.next_message),
            "date": int(datetime.now(UTC).timestamp()),
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "Bruce", "language_code": "ru"},
        } | fields
        self.next_message += 1
        update = Update.model_validate(
            {"update_id": self.next_update, kind: body}, context={"bot": self.bot}
        )
        self.next_update += 1
        return await self.intake.handle(update)

    async def replies(self, count: int) -> list[str]:
        await self.api.wait(lambda: len(self.api.texts(USER)) >= count)
        return self.api.texts(USER)


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Door]:
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    files = FileServer()
    await files.start()
    api = FakeBotAPI(files=files.files)
    bot = fake_bot(api, f"http://127.0.0.1:{files.port}")
    registry = CollectorRegistry()
    metrics = TelegramMetrics(registry)
    outbox = Outbox(bot, metrics)
    outbox.pacer.per_chat_s = 0.0
    typing = Typing(outbox, metrics)
    sink = TelegramSink(outbox, typing, metrics, quote_transcript=True)
    store, llm = MemoryStore(), ScriptedLLM(script=lambda r: f"echo: {r.messages[-1].content}")
    # The transcriber port is filled as the app always fills it; a fake, so no model loads.
    ports = Ports(store=store, llm=llm, clock=ManualClock(), transcriber=FakeTranscriber())
    async with open_app(settings, sink=sink, ports=ports, metrics=registry) as app:
        front = FrontDoor(
            registry=app.registry,
            store=store,
            clock=ManualClock(),
            outbox=outbox,
            typing=typing,
            metrics=metrics,
            limiter=RateLimiter(0, 1),
            voice_max_seconds=60,
        )
        dispatcher = Dispatcher()
        dispatcher.include_router(build_router(front))
        yield Door(Intake(bot, dispatcher, metrics), front, api, llm, store, app, bot, files)
    await typing.close()
    await bot.session.close()
    await files.stop()


async def test_text_is_stored_then_answered_while_typing_shows(door: Door):
    door.llm.gate = asyncio.Event()
    assert await door.send(text="Добрый вечер")
    await door.api.wait(lambda: (USER, "typing") in door.api.actions)
    door.llm.gate.set()
    assert (await door.replies(1)) == ["echo: Добрый вечер"]
    await door.api.wait(lambda: not door.door.typing.active(USER))
    assert next(e.content for e in door.store.events["tg:7001"].values()) == "Добрый вечер"


async def test_a_repeated_update_id_is_answered_once(door: Door):
    assert await door.send(text="раз")
    door.next_update -= 1
    assert await door.send(text="раз")
    await door.replies(1)
    await door.app.registry.drain()
    assert door.api.texts(USER) == ["echo: раз"]


async def test_an_edit_replaces_a_message_still_waiting(door: Door):
    door.llm.gate = asyncio.Event()
    await door.send(text="первое", message_id=10)
    await door.api.wait(lambda: len(door.llm.calls) == 1)  # the first is in hand
    await door.send(text="втарое", message_id=11)  # waits in the mailbox
    assert await door.send(kind="edited_message", text="второе", message_id=11, edit_date=1)
    door.llm.gate.set()
    assert await door.replies(2) == ["echo: первое", "echo: второе"]
    contents = [e.content for e in door.store.events["tg:7001"].values() if e.role == "user"]
    assert contents == ["первое", "второе"]


async def test_an_edit_after_the_answer_is_a_correction(door: Door):
    await door.send(text="Встреча в пятницу", message_id=20)
    await door.replies(1)
    await door.send(kind="edited_message", text="Встреча в субботу", message_id=20, edit_date=1)
    replies = await door.replies(2)
    assert replies[1] == "echo: " + tg_text("correction", "ru", text="Встреча в субботу")


async def test_voice_over_the_duration_cap_is_refused_before_download(door: Door):
    voice = {"file_id": "v1", "file_unique_id": "v1", "duration": 61, "file_size": 1000}
    await door.send(voice=voice)
    assert await door.replies(1) == [tg_text("voice_too_long", "ru", seconds=61, limit=60)]
    assert "GetFile" not in door.api.calls
    assert "tg:7001" not in door.store.events


async def test_voice_over_twenty_megabytes_is_refused(door: Door):
    voice = {"file_id": "v2", "file_unique_id": "v2", "duration": 5, "file_size": 21 << 20}
    await door.send(voice=voice)
    assert await door.replies(1) == [tg_text("voice_too_big", "ru", mb=20)]


async def test_a_voice_note_is_downloaded_transcribed_and_answered(door: Door):
    door.files.files["voice/v3.oga"] = FakeTranscriber.speech("Который час?", "ru")
    voice = {"file_id": "v3", "file_unique_id": "v3", "duration": 3, "file_size": 40}
    assert await door.send(voice=voice)
    replies = await door.replies(1)
    assert replies[0].endswith("echo: Который час?"), replies  # quoted transcript, then reply
    stored = list(door.store.events["tg:7001"].values())
    assert (stored[0].source, stored[0].content) == ("voice", "Который час?")


async def test_undecodable_voice_is_rejected_with_the_reason(door: Door):
    door.files.files["voice/v4.oga"] = b"OggS not really audio"
    voice = {"file_id": "v4", "file_unique_id": "v4", "duration": 3, "file_size": 21}
    assert await door.send(voice=voice)
    replies = await door.replies(1)
    assert any(replies[0].startswith(v.split("{")[0]) for v in variants("voice_rejected", "ru"))
    assert door.llm.calls == []  # nothing was heard, so the model was not asked
    stored = list(door.store.events["tg:7001"].values())
    assert stored[0].source == "voice"


async def test_store_down_apologises_once_and_defers_the_update(door: Door):
    door.store.down = True
    assert not await door.send(text="раз")
    assert not await door.send(text="два")
    assert door.api.texts(USER) == list(variants("store_down", "ru"))
    door.store.down = False
    assert await door.send(text="три")
    assert (await door.replies(2))[1] == "echo: три"


async def test_other_content_types_get_a_polite_answer(door: Door):
    await door.send(sticker=None, location={"latitude": 1.0, "longitude": 2.0})
    assert await door.replies(1) == [tg_text("unsupported", "ru")]


async def test_group_chats_are_ignored(door: Door):
    await door.send(text="всем привет", chat={"id": -100, "type": "group", "title": "Лига"})
    await door.app.registry.drain()
    assert door.api.sent == []


async def test_forget_cancelled_keeps_everything(door: Door):
    assert await door.send(text="Запомни: я люблю чай")
    await door.replies(1)
    await door.send(text="/forget", entities=[{"type": "bot_command", "offset": 0, "length": 7}])
    await door.replies(2)
    query = {
        "id": "q1",
        "from": {"id": USER, "is_bot": False, "first_name": "Bruce"},
        "chat_instance": "c",
        "data": "forget:no",
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": USER, "type": "private"},
            "text": "?",
        },
    }
    update = Update.model_validate(
        {"update_id": 99, "callback_query": query}, context={"bot": door.bot}
    )
    assert await door.intake.handle(update)
    assert (await door.replies(3))[2] == tg_text("forget_cancelled", "ru")
    assert await door.store.get_profile("tg:7001") is not None
    kept = await door.store.load_turn("tg:7001", limit=10, before="\uffff")
    assert kept.memory.total_events == 2  # the message and its answer


def _forget_query(door: Door, data: str) -> Update:
    query = {
        "id": "q2",
        "from": {"id": USER, "is_bot": False, "first_name": "Bruce"},
        "chat_instance": "c",
        "data": data,
        "message": {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"}},
    }
    return Update.model_validate(
        {"update_id": 98, "callback_query": query}, context={"bot": door.bot}
    )


async def test_forget_confirmed_leaves_nothing_the_store_can_read(door: Door):
    assert await door.send(text="Запомни: я люблю чай")
    await door.replies(1)
    never = datetime(2999, 1, 1, tzinfo=UTC)
    await door.store.cache_answer("k1", "tg:7001", "cached", expires_at=never)
    await door.store.cache_answer("k2", "tg:7002", "someone else", expires_at=never)
    assert await door.intake.handle(_forget_query(door, "forget:yes"))
    await door.replies(2)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert await door.store.get_profile("tg:7001") is None
    left = await door.store.load_turn("tg:7001", limit=10, before="\uffff")
    assert (left.memory.total_events, left.memory.events) == (0, ())
    assert await door.store.unanswered("tg:7001") == []
    assert await door.store.cached_answer("k1", now=now) is None
    assert await door.store.cached_answer("k2", now=now) == "someone else"  # others keep theirs


async def test_start_creates_the_profile_in_the_users_language(door: Door):
    await door.send(
        text="/start",
        entities=[{"type": "bot_command", "offset": 0, "length": 6}],
        **{"from": {"id": USER, "is_bot": False, "first_name": "Bruce", "language_code": "en"}},
    )
    assert await door.replies(1) == [tg_text("start_new", "en", name="Bruce")]
    profile = door.store.profiles["tg:7001"]
    assert profile.language == "en"


async def test_store_errors_while_erasing_propagate(door: Door):
    door.store.down = True
    with pytest.raises(StoreUnavailable):
        await door.door.forget(USER)


async def test_a_full_mailbox_defers_the_update_on_a_broker(door: Door):
    """With `defer_busy` (a broker worker) a message the mailbox has no room for is neither
    stored nor confirmed: it comes again, where polling would tell the user "busy"."""
    door.door.defer_busy = True
    door.llm.gate = asyncio.Event()
    capacity = door.app.settings.actors.mailbox_capacity
    assert await door.send(text="first")
    await door.api.wait(lambda: len(door.llm.calls) == 1)  # in hand; the mailbox is empty
    for n in range(capacity):
        assert await door.send(text=f"waiting {n}")
    assert not await door.send(text="one too many")  # deferred: must come again
    stored = [e.content for e in door.store.events["tg:7001"].values() if e.role == "user"]
    assert "one too many" not in stored
    assert door.api.texts(USER) == []  # nobody was told "busy"
    door.llm.gate.set()
