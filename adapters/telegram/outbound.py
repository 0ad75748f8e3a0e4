"""Everything the butler sends to Telegram: replies, chat actions, and the pace of both.

Telegram allows about one message per second in a chat and about thirty per second for a bot;
beyond that it answers 429 with `retry_after`. `Pacer` keeps one budget per chat and one for
the bot, `Outbox.call` honours `TelegramRetryAfter` by moving the chat's budget and retries
transient network and server errors with backoff. Replies are sent as plain text (no
`parse_mode`), so nothing a user or the model writes can break formatting; the only markup,
the quoted transcript of a voice note, is sent as entities.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendChatAction, SendMessage
from aiogram.methods.base import TelegramMethod
from aiogram.utils.formatting import BlockQuote, Text

from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.split import TELEGRAM_LIMIT, split_message, utf16_len
from engine.errors import DeliveryFailed
from engine.ports import OutgoingReply

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TRACKED_CHATS = 100_000
QUOTE_LIMIT = 1000  # UTF-16 units of a transcript shown above the reply


def chat_of(user_id: str) -> int | None:
    """The private chat of a Telegram user id as Butler names it (`tg:<id>`)."""
    if not user_id.startswith("tg:"):
        return None
    try:
        return int(user_id[3:])
    except ValueError:
        return None


def user_of(telegram_id: int) -> str:
    return f"tg:{telegram_id}"


@dataclass(slots=True)
class Pacer:
    """Spaces sends: `per_chat_s` apart in one chat, `per_bot_s` apart for the whole bot."""

    per_chat_s: float = 1.0
    per_bot_s: float = 1 / 30
    clock: Callable[[], float] = time.monotonic
    _chats: OrderedDict[int, float] = field(default_factory=OrderedDict)
    _bot_next: float = 0.0

    def reserve(self, chat_id: int) -> float:
        """Take the chat's next slot; returns how long to wait for it."""
        now = self.clock()
        # Two independent budgets: one chat waiting for its slot never delays another chat.
        bot_slot = max(now, self._bot_next)
        chat_slot = max(now, self._chats.get(chat_id, 0.0))
        self._bot_next = bot_slot + self.per_bot_s
        self._chats[chat_id] = chat_slot + self.per_chat_s
        slot = max(bot_slot, chat_slot)
        self._chats.move_to_end(chat_id)
        while len(self._chats) > MAX_TRACKED_CHATS:
            self._chats.popitem(last=False)
        return slot - now

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said to wait: nothing more goes to this chat for `seconds`."""
        until = self.clock() + seconds
        self._chats[chat_id] = max(self._chats.get(chat_id, 0.0), until)

    def forget(self, chat_id: int) -> None:
        self._chats.pop(chat_id, None)


@dataclass(slots=True)
class Outbox:
    """Calls Bot API methods for a chat within its budget, with retries."""

    bot: Bot
    metrics: TelegramMetrics
    pacer: Pacer = field(default_factory=Pacer)
    retries: int = 4
    max_retry_after_s: float = 300.0
    sleep: Callable[[float], Any] = asyncio.sleep  # noqa: TID251 - pacing is waiting on time
    backoff_base_s: float = 0.5

    async def call(self, chat_id: int, method: TelegramMethod[T], *, paced: bool = True) -> T:
        """Send `method`; raises the last TelegramAPIError when retries are exhausted or the
        error is permanent (a blocked bot, a bad request)."""
        name = type(method).__name__
        failures = 0
        while True:
            if paced:
                delay = self.pacer.reserve(chat_id)
                if delay > 0:
                    await self.sleep(delay)
            try:
                result = await self.bot(method)
            except TelegramRetryAfter as exc:
                self.metrics.retry_after(exc.retry_after)
                if exc.retry_after > self.max_retry_after_s:
                    self.metrics.sent(name, "gave_up")
                    raise
                self.pacer.penalize(chat_id, exc.retry_after)
                if not paced:
                    await self.sleep(exc.retry_after)
                continue
            except (TelegramNetworkError, TelegramServerError):
                failures += 1
                if failures > self.retries:
                    self.metrics.sent(name, "gave_up")
                    raise
                jitter = random.uniform(0.8, 1.2)  # noqa: S311 - not cryptography
                await self.sleep(self.backoff_base_s * 2 ** (failures - 1) * jitter)
                continue
            except TelegramAPIError:
                self.metrics.sent(name, "rejected")
                raise
            self.metrics.sent(name, "ok")
            return result


class Typing:
    """Shows "typing…" in a chat while any of its messages waits for a reply.

    Telegram shows a chat action for about five seconds, so it is refreshed every
    `interval_s` until the last pending message of the chat is answered, or `max_s` passes.
    """

    def __init__(
        self,
        outbox: Outbox,
        metrics: TelegramMetrics,
        *,
        interval_s: float = 4.5,
        max_s: float = 600.0,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._interval_s = interval_s
        self._max_s = max_s
        self._pending: dict[int, set[Hashable]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def begin(self, chat_id: int, key: Hashable, *, arrived: float | None = None) -> None:
        """A message (`key`) of the chat now waits for a reply."""
        self._pending.setdefault(chat_id, set()).add(key)
        if chat_id not in self._tasks:
            task = asyncio.create_task(self._show(chat_id, arrived), name=f"typing:{chat_id}")
            self._tasks[chat_id] = task
            task.add_done_callback(lambda _: self._ended(chat_id, task))

    def end(self, chat_id: int, key: Hashable) -> None:
        keys = self._pending.get(chat_id)
        if keys is None:
            return
        keys.discard(key)
        if not keys:
            self.forget(chat_id)

    def forget(self, chat_id: int) -> None:
        self._pending.pop(chat_id, None)
        task = self._tasks.pop(chat_id, None)
        if task is not None:
            task.cancel()

    def active(self, chat_id: int) -> bool:
        return chat_id in self._tasks

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for chat_id in list(self._tasks):
            self.forget(chat_id)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, chat_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(chat_id) is task:
            del self._tasks[chat_id]
            self._pending.pop(chat_id, None)

    async def _show(self, chat_id: int, arrived: float | None) -> None:
        started = time.monotonic()
        action = SendChatAction(chat_id=chat_id, action=ChatAction.TYPING)
        first = True
        while time.monotonic() - started < self._max_s:
            try:
                await self._outbox.call(chat_id, action, paced=False)
            except TelegramAPIError as exc:
                log.debug("chat action failed: %s", type(exc).__name__)
            else:
                if first and arrived is not None:
                    self._metrics.typing_delay(time.monotonic() - arrived)
            first = False
            await asyncio.sleep(self._interval_s)  # noqa: TID251 - the refresh period itself


class TelegramSink:
    """The `ReplySink` of `butler run`: replies to users' private chats."""

    def __init__(
        self,
        outbox: Outbox,
        typing: Typing,
        metrics: TelegramMetrics,
        *,
        quote_transcript: bool,
    ) -> None:
        self._outbox = outbox
        self._typing = typing
        self._metrics = metrics
        self._quote = quote_transcript

    async def deliver(self, reply: OutgoingReply) -> str:
        """Send the reply (split, paced); returns the Bot API's message ids, comma-separated.

        A refusal that sending again cannot change (the user blocked the bot, a bad request)
        returns `refused:<reason>`: the reply is kept in memory and not sent again.

        Raises:
            DeliveryFailed: the Bot API could not be reached or kept failing, or asked to wait
                longer than the outbox waits: the reply stays owed and is sent later.
        """
        chat_id = chat_of(reply.user_id)
        if chat_id is None:
            log.warning("reply for a user outside Telegram dropped")
            self._metrics.sent("SendMessage", "no_chat")
            return "refused:no_chat"
        sent: list[str] = []
        try:
            for method in self.messages(chat_id, reply):
                message = await self._outbox.call(chat_id, method)
                sent.append(str(message.message_id))
        except TelegramForbiddenError:
            log.info("a user has blocked the bot; reply kept in memory only")
            return "refused:forbidden"
        except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as exc:
            log.warning("reply not delivered yet: %s", type(exc).__name__)
            raise DeliveryFailed(f"the Bot API failed: {type(exc).__name__}") from exc
        except TelegramAPIError as exc:
            log.error("reply not delivered: %s", type(exc).__name__)  # noqa: TRY400 - no text
            return f"refused:{type(exc).__name__}"
        finally:
            self._typing.end(chat_id, reply.reply_to)
        return ",".join(sent)

    def messages(self, chat_id: int, reply: OutgoingReply) -> list[SendMessage]:
        """The reply as Bot API calls: split to Telegram's limit, transcript quoted first."""
        quote = reply.heard.strip() if self._quote and reply.source == "voice" else ""
        methods: list[SendMessage] = []
        body = reply.text
        if quote:
            shown = split_message(quote, QUOTE_LIMIT)[0]
            if shown != quote:
                shown += "…"
            head = Text(BlockQuote(shown), "\n\n")
            room = TELEGRAM_LIMIT - utf16_len(head.render()[0])
            first = split_message(body, room)[:1]
            rest = body.strip()[len(first[0]) :] if first else ""
            kwargs = Text(head, first[0] if first else "").as_kwargs()
            methods.append(
                SendMessage(
                    chat_id=chat_id,
                    text=kwargs["text"],
                    entities=kwargs["entities"],
                    parse_mode=None,
                )
            )
            body = rest
        methods.extend(
            SendMessage(chat_id=chat_id, text=piece, parse_mode=None)
            for piece in split_message(body)
        )
        if not methods:  # an empty reply still ends the wait
            methods.append(SendMessage(chat_id=chat_id, text="…", parse_mode=None))
        return methods
