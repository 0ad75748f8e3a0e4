"""The `ReplySink` port's contract: a delivered reply reaches its user whole and in order,
and a reply that cannot be delivered never raises into the actor.

Run against the Telegram sink over real HTTP (the `telegram-test-api` emulator), the
terminal sink of `butler chat`, and the collecting fake the actor tests use.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from prometheus_client import CollectorRegistry

from adapters.bootstrap.settings import Settings
from adapters.entrypoints.chat import ConsoleSink
from adapters.telegram.chat_actions import Typing
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, TelegramSink
from adapters.telegram.service import make_session
from engine.ports import OutgoingReply, ReplySink
from tests.fakes import CollectingSink
from tests.support.telegram_emulator import TOKEN, Emulator

pytestmark = pytest.mark.anyio

USER = "tg:4242"
LONG = "\n\n".join(f"Абзац {n}. " + "Позвольте заметить, сэр. " * 60 for n in range(6))


@dataclass
class Subject:
    sink: ReplySink
    shown: Callable[[Callable[[str], bool]], Awaitable[str]]
    """Everything the user has been shown, joined, once `done(that)` holds (with a deadline)."""


@pytest.fixture(params=["telegram", "console", "collecting"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "collecting":
        collecting = CollectingSink()

        async def collected(done: Callable[[str], bool]) -> str:
            await collecting.wait_for(1)
            return "\n\n".join(r.text for r in collecting.replies)

        yield Subject(collecting, collected)
    elif request.param == "console":
        out = io.StringIO()

        async def printed(done: Callable[[str], bool]) -> str:
            return out.getvalue()

        yield Subject(ConsoleSink(out, one_line=False), printed)
    else:
        emulator = await Emulator.start()
        settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
        session = make_session(settings.telegram, api=emulator.api, middlewares=[emulator.gaps])
        bot = Bot(TOKEN, session=session)
        metrics = TelegramMetrics(CollectorRegistry())
        outbox = Outbox(bot, metrics)
        outbox.pacer.per_chat_s = 0.0
        sink = TelegramSink(outbox, Typing(outbox, metrics), metrics, quote_transcript=True)

        def joined(messages: list[dict[str, Any]]) -> str:
            return "\n\n".join(str(m.get("text", "")) for m in messages)

        async def shown(done: Callable[[str], bool]) -> str:
            return joined(await emulator.wait_for(4242, lambda m: done(joined(m))))

        try:
            yield Subject(sink, shown)
        finally:
            await bot.session.close()
            await emulator.stop()


async def test_a_reply_reaches_the_user_whole(subject: Subject) -> None:
    await subject.sink.deliver(OutgoingReply(USER, "Будет исполнено, сэр.", "e1", "reply"))
    said = "Будет исполнено, сэр."
    assert said in await subject.shown(lambda text: said in text)


async def test_a_long_reply_arrives_complete_and_in_order(subject: Subject) -> None:
    await subject.sink.deliver(OutgoingReply(USER, LONG, "e1", "reply"))
    shown = await subject.shown(lambda text: text.split() == LONG.split())
    assert shown.split() == LONG.split()


async def test_markup_in_a_reply_is_shown_as_written(subject: Subject) -> None:
    text = "<b>не жирный</b> *и не курсив* [ссылка](http://example.com)"
    await subject.sink.deliver(OutgoingReply(USER, text, "e1", "reply"))
    assert text in await subject.shown(lambda shown: text in shown)


async def test_an_undeliverable_reply_does_not_raise(subject: Subject) -> None:
    await subject.sink.deliver(OutgoingReply("", "", "e0", "error"))
