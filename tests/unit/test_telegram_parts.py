"""Splitting, pacing, retries, rate limits, dedup, batch confirmation and the webhook."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.methods import GetUpdates, SendMessage
from aiogram.types import Update
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from adapters.bootstrap.settings import Settings, SettingsError
from adapters.telegram.chat_actions import Typing
from adapters.telegram.dispatch import Intake
from adapters.telegram.intake import BoundedMap, RateLimiter, SeenUpdates
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, Pacer, TelegramSink, chat_of, user_of
from adapters.telegram.polling import poll
from adapters.telegram.split import split_message, utf16_len
from adapters.telegram.texts import language_of
from adapters.telegram.webhook import webhook_app
from engine.errors import StoreUnavailable
from engine.ports import OutgoingReply
from tests.fakes import ScriptedBot

pytestmark = pytest.mark.anyio


# -- splitting -------------------------------------------------------------------------------


@given(st.text(alphabet=st.sampled_from("аб c.!\n😀x "), max_size=400), st.integers(2, 60))
def test_split_pieces_fit_and_keep_every_word(body: str, limit: int):
    pieces = split_message(body, limit)
    assert all(0 < utf16_len(p) <= limit for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(body.split())


def test_split_prefers_paragraphs_then_sentences():
    body = "Первый абзац. Второе предложение.\n\nВторой абзац."
    assert split_message(body, 40) == ["Первый абзац. Второе предложение.", "Второй абзац."]
    assert split_message("Раз. Два. Три.", 10) == ["Раз. Два.", "Три."]


def test_split_never_cuts_a_surrogate_pair():
    assert split_message("😀" * 5, 3) == ["😀", "😀", "😀", "😀", "😀"]


def test_short_text_is_one_piece_and_blank_is_none():
    assert split_message("  Добрый день  ") == ["Добрый день"]
    assert split_message(" \n ") == []


# -- intake bookkeeping ----------------------------------------------------------------------


def test_rate_limiter_refuses_beyond_the_burst_and_refills():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.allow(1) for _ in range(4)] == [True, True, False, False]
    assert limiter.allow(2) is True  # per user
    now[0] += 1.0
    assert limiter.allow(1) is True
    assert limiter.allow(1) is False


def test_rate_limit_zero_means_off():
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.allow(1) for _ in range(100))


def test_bounded_map_forgets_the_least_recently_used():
    seen = BoundedMap[int, str](2)
    seen.put(1, "a")
    seen.put(2, "b")
    assert seen.get(1) == "a"
    seen.put(3, "c")
    assert (1 in seen, 2 in seen, 3 in seen) == (True, False, True)
    assert seen.drop(lambda k: k > 1) == 1
    assert seen.pop(1) == "a"
    assert seen.pop(1) is None
    updates = SeenUpdates(capacity=1)
    updates.remember(5)
    assert updates.seen(5)
    updates.remember(6)
    assert not updates.seen(5)


def test_user_ids_and_languages():
    assert chat_of(user_of(42)) == 42
    assert chat_of("local") is None
    assert chat_of("tg:x") is None
    assert [language_of(c) for c in ("ru", "en-GB", "de", None)] == ["ru", "en", None, None]


def test_telegram_settings_parse_and_refuse_nonsense():
    s = Settings.from_env({"BUTLER_ALLOWED_USERS": "1, 2,3", "BUTLER_VOICE_QUOTE_TRANSCRIPT": "0"})
    assert s.telegram.allowed_users == frozenset({1, 2, 3})
    assert s.telegram.quote_transcript is False
    for env in (
        {"BUTLER_ALLOWED_USERS": "alice"},
        {"BUTLER_TELEGRAM_API_URL": "ftp://x"},
        {"BUTLER_WEBHOOK_URL": "http://bot.example.com/hook"},
        {"BUTLER_VOICE_QUOTE_TRANSCRIPT": "maybe"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(env)


# -- outbound --------------------------------------------------------------------------------


def metrics() -> TelegramMetrics:
    return TelegramMetrics(CollectorRegistry())


def send(chat: int = 1) -> SendMessage:
    return SendMessage(chat_id=chat, text="x")


async def test_retry_after_moves_the_chats_budget_and_retries():
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bot = ScriptedBot(TelegramRetryAfter(send(), "flood", retry_after=7), "sent")
    outbox = Outbox(bot, metrics(), pacer=Pacer(clock=lambda: now[0]), sleep=sleep)  # type: ignore[arg-type]
    result: Any = await outbox.call(1, send())
    assert result == "sent"
    assert len(bot.calls) == 2
    assert sum(slept) >= 7.0


async def test_pacer_spaces_one_chat_but_not_two():
    pacer = Pacer(per_chat_s=1.0, per_bot_s=0.0, clock=lambda: 0.0)
    assert pacer.reserve(1) == 0.0
    assert pacer.reserve(1) == 1.0
    assert pacer.reserve(2) == 0.0


async def test_network_errors_are_retried_then_given_up():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    failures = [TelegramNetworkError(send(), "reset") for _ in range(3)]
    outbox = Outbox(ScriptedBot(*failures), metrics(), retries=2, sleep=sleep)  # type: ignore[arg-type]
    outbox.pacer.per_chat_s = outbox.pacer.per_bot_s = 0.0
    with pytest.raises(TelegramNetworkError):
        await outbox.call(1, send())
    assert len(slept) == 2
    assert slept[1] > slept[0]  # backoff grows


async def test_a_blocked_bot_is_not_retried_and_the_reply_is_dropped_quietly():
    bot = ScriptedBot(TelegramForbiddenError(send(), "blocked"))
    m = metrics()
    outbox = Outbox(bot, m)  # type: ignore[arg-type]
    typing = Typing(outbox, m)
    sink = TelegramSink(outbox, typing, m, quote_transcript=True)
    await sink.deliver(OutgoingReply("tg:1", "Добрый день", "e1", "reply"))
    assert len(bot.calls) == 1


async def test_voice_replies_quote_the_transcript_as_an_entity():
    m = metrics()
    outbox = Outbox(ScriptedBot(), m)  # type: ignore[arg-type]
    sink = TelegramSink(outbox, Typing(outbox, m), m, quote_transcript=True)
    reply = OutgoingReply(
        "tg:1", "Будет исполнено.", "e1", "reply", "voice", heard="Купи <b>чай</b>"
    )
    [message] = sink.messages(1, reply)
    assert message.text == "Купи <b>чай</b>\n\nБудет исполнено."
    assert message.parse_mode is None
    assert [e.type for e in message.entities or []] == ["blockquote"]
    plain = sink.messages(1, OutgoingReply("tg:1", "*не жирный*", "e2", "reply"))
    assert [(p.text, p.parse_mode, p.entities) for p in plain] == [("*не жирный*", None, None)]


async def test_typing_refreshes_until_the_reply_then_stops():
    bot = ScriptedBot()
    m = metrics()
    outbox = Outbox(bot, m)  # type: ignore[arg-type]
    typing = Typing(outbox, m, interval_s=0.01)
    typing.begin(5, "e1", arrived=0.0)
    async with asyncio.timeout(5):
        while len(bot.calls) < 3:
            bot.called.clear()
            await bot.called.wait()
    typing.end(5, "e1")
    assert not typing.active(5)
    await typing.close()


# -- intake: order, dedup, confirmation ------------------------------------------------------


class Dispatch:
    """A dispatcher stand-in: records the order it saw updates, fails the chosen ones."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.seen: list[int] = []

    async def feed_update(self, bot: Any, update: Update) -> None:
        self.seen.append(update.update_id)
        await asyncio.sleep(0)  # noqa: TID251 - let other users' chains interleave
        if update.update_id in self.failing:
            raise StoreUnavailable("down")


def text_update(update_id: int, user: int) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 0,
                "chat": {"id": user, "type": "private"},
                "from": {"id": user, "is_bot": False, "first_name": "U"},
                "text": f"m{update_id}",
            },
        }
    )


async def test_a_batch_confirms_up_to_the_first_failure_and_keeps_user_order():
    dispatch = Dispatch(failing={3})
    intake = Intake(ScriptedBot(), dispatch, metrics())  # type: ignore[arg-type]
    batch = [
        text_update(1, 10),
        text_update(2, 20),
        text_update(3, 10),
        text_update(4, 20),
        text_update(5, 10),
    ]
    offset, retry = await intake.handle_batch(batch)
    assert (offset, retry) == (3, True)  # 1 and 2 confirmed; 3 must come again
    assert 5 not in dispatch.seen  # user 10's later message waits behind its failed one
    assert [u for u in dispatch.seen if u in (1, 3)] == [1, 3]
    dispatch.failing.clear()
    offset, retry = await intake.handle_batch(batch[2:])
    assert (offset, retry) == (6, False)
    assert dispatch.seen.count(4) == 1  # handled once although delivered twice


async def test_polling_confirms_the_last_batch_when_stopped():
    stop = asyncio.Event()
    batch = [text_update(1, 10), text_update(2, 10)]

    class Bot(ScriptedBot):
        async def __call__(self, method: Any, request_timeout: int | None = None) -> Any:
            self.calls.append(method)
            if len(self.calls) == 1:
                return batch
            stop.set()
            return []

    bot = Bot()
    intake = Intake(bot, Dispatch(set()), metrics())  # type: ignore[arg-type]
    await asyncio.wait_for(poll(intake, stop, timeout_s=0), 5)
    offsets = [c.offset for c in bot.calls if isinstance(c, GetUpdates)]
    assert offsets[-1] == 3


async def test_webhook_checks_the_secret_and_reports_transient_failures():
    dispatch = Dispatch(failing={2})
    intake = Intake(ScriptedBot(), dispatch, metrics())  # type: ignore[arg-type]
    app = webhook_app(intake, "/hook", "s3cret")
    async with TestClient(TestServer(app)) as client:
        good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
        body = text_update(1, 10).model_dump(mode="json", exclude_none=True)
        assert (await client.post("/hook", json=body)).status == 401
        assert (await client.post("/hook", json=body, headers=good)).status == 200
        assert (await client.post("/hook", data=b"{not json", headers=good)).status == 400
        failing = text_update(2, 10).model_dump(mode="json", exclude_none=True)
        assert (await client.post("/hook", json=failing, headers=good)).status == 503
        dispatch.failing.clear()
        assert (await client.post("/hook", json=failing, headers=good)).status == 200
    assert dispatch.seen == [1, 2, 2]


async def _until(predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


async def test_webhook_deliveries_of_one_user_never_overlap():
    gates = {n: asyncio.Event() for n in (1, 2, 4)}
    running: list[int] = []
    overlaps: list[int] = []

    class Slow(Dispatch):
        async def feed_update(self, bot: Any, update: Update) -> None:
            self.seen.append(update.update_id)
            if running:
                overlaps.append(update.update_id)
            running.append(update.update_id)
            if update.update_id in gates:
                await gates[update.update_id].wait()
            running.remove(update.update_id)

    def waiting(user: int) -> int:
        return intake._locks.get(user, (None, 0))[1]

    dispatch = Slow(set())
    intake = Intake(ScriptedBot(), dispatch, metrics())  # type: ignore[arg-type]
    first = asyncio.create_task(intake.handle_in_order(text_update(1, 10)))
    second = asyncio.create_task(intake.handle_in_order(text_update(2, 10)))
    await _until(lambda: running == [1] and waiting(10) == 2)  # the second waits its turn
    gates[1].set()
    await first
    await _until(lambda: running == [2])  # the second holds the lock, stuck on its gate
    third = asyncio.create_task(intake.handle_in_order(text_update(3, 10)))
    await _until(lambda: waiting(10) == 2)  # the third has asked for the lock
    assert running == [2]
    assert not third.done()  # ungated: without the lock it would have run and finished
    gates[2].set()
    assert list(await asyncio.gather(second, third)) == [True, True]
    assert overlaps == []
    assert dispatch.seen == [1, 2, 3]
    assert intake._locks == {}  # nothing kept once the user's deliveries are done

    # The check can see an overlap: another user's delivery runs beside a stuck one.
    stuck = asyncio.create_task(intake.handle_in_order(text_update(4, 11)))
    await _until(lambda: running == [4])
    assert await intake.handle_in_order(text_update(5, 12))
    assert overlaps == [5]
    gates[4].set()
    assert await stuck


async def test_a_failing_update_is_logged_without_its_text(caplog: pytest.LogCaptureFixture):
    class Broken(Dispatch):
        async def feed_update(self, bot: Any, update: Update) -> None:
            raise ValueError(f"cannot read {update.message.text if update.message else ''}")

    intake = Intake(ScriptedBot(), Broken(set()), metrics())  # type: ignore[arg-type]
    assert await intake.handle(text_update(7, 10))  # dropped, not retried forever
    assert "ValueError" in caplog.text
    assert "m7" not in caplog.text
