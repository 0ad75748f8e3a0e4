"""Chat actions inside the Telegram budgets: one per chat per refresh, replies first."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter
from aiogram.methods import SendChatAction
from prometheus_client import CollectorRegistry

from adapters.telegram.chat_actions import Typing
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, Pacer
from tests.fakes import ScriptedBot as Bot

pytestmark = pytest.mark.anyio


def action(chat: int = 1) -> SendChatAction:
    return SendChatAction(chat_id=chat, action=ChatAction.TYPING)


def clocked() -> tuple[Pacer, list[float]]:
    now = [100.0]
    return Pacer(per_chat_s=1.0, per_bot_s=0.1, clock=lambda: now[0]), now


def test_an_action_takes_a_bot_slot_but_not_the_chats():
    pacer, now = clocked()
    assert pacer.offer(1, refresh_s=4.5) == 0.0
    # The reply it announces waits at most the one bot slot, not the chat's second.
    assert pacer.reserve(1) == pytest.approx(0.1)
    now[0] += 0.1
    assert pacer.reserve(2) == pytest.approx(0.1)  # chat 2 had no action: only the bot's pace


def test_no_action_while_a_reply_waits_in_the_chat_or_for_the_bot():
    pacer, now = clocked()
    pacer.reserve(1)
    pacer.reserve(1)  # the chat's second reply waits a second for its slot
    assert pacer.offer(2, refresh_s=4.5) == pytest.approx(0.2)  # the bot's next two slots
    now[0] += 0.2
    assert pacer.offer(1, refresh_s=4.5) == pytest.approx(0.8)
    assert pacer.offer(2, refresh_s=4.5) == 0.0
    assert pacer.offer(3, refresh_s=4.5) > 0  # the action took the bot's slot: in the budget
    now[0] += 0.8
    assert pacer.offer(1, refresh_s=4.5) == 0.0  # the reply went: "typing…" for what is owed


def test_one_action_per_chat_per_refresh_until_a_message_clears_it():
    pacer, now = clocked()
    assert pacer.offer(1, refresh_s=4.5) == 0.0
    now[0] += 1.0
    assert pacer.offer(1, refresh_s=4.5) == pytest.approx(3.5)
    now[0] += 3.5
    assert pacer.offer(1, refresh_s=4.5) == 0.0
    now[0] += 1.0
    pacer.reserve(1)  # a reply clears "typing…" on the user's screen
    now[0] += 0.2
    assert pacer.offer(1, refresh_s=4.5) == 0.0


def test_no_action_while_telegram_asked_the_chat_to_wait():
    pacer, now = clocked()
    pacer.penalize(1, 30)
    now[0] += 10
    assert pacer.offer(1, refresh_s=4.5) == pytest.approx(20)
    assert pacer.offer(2, refresh_s=4.5) == 0.0
    now[0] += 20
    assert pacer.offer(1, refresh_s=4.5) == 0.0


async def test_a_rejected_action_is_dropped_not_retried():
    m = TelegramMetrics(CollectorRegistry())
    for failure in (
        TelegramRetryAfter(action(), "slow down", 30),
        TelegramNetworkError(action(), "reset"),
    ):
        bot = Bot(failure)
        outbox = Outbox(bot, m)  # type: ignore[arg-type]
        assert await outbox.offer(1, action(), refresh_s=4.5) > 0
        assert len(bot.calls) == 1
    # After a 429 the chat's replies wait as Telegram asked.
    retry = Outbox(Bot(TelegramRetryAfter(action(), "slow down", 30)), m)  # type: ignore[arg-type]
    await retry.offer(1, action(), refresh_s=4.5)
    assert retry.pacer.reserve(1) > 29


async def test_typing_restarted_for_the_same_chat_sends_once_per_refresh():
    bot = Bot()
    m = TelegramMetrics(CollectorRegistry())
    outbox = Outbox(bot, m)  # type: ignore[arg-type]
    typing = Typing(outbox, m, interval_s=60.0)
    typing.begin(5, "download")  # a voice note's download, then its stored message
    async with asyncio.timeout(5):
        await bot.called.wait()
    typing.end(5, "download")
    typing.begin(5, "e1")
    typing.begin(6, "e2")
    async with asyncio.timeout(5):
        while len(bot.calls) < 2:
            bot.called.clear()
            await bot.called.wait()
    await typing.close()
    assert sorted(c.chat_id for c in bot.calls) == [5, 6]
