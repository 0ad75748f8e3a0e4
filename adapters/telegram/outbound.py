"""Everything the butler sends to Telegram: replies, chat actions, and the pace of both.

Telegram allows about one message per second in a chat and about thirty per second for a bot;
beyond that it answers 429 with `retry_after`. `Pacer` keeps one budget per chat and one for
the bot, `Outbox.call` honours `TelegramRetryAfter` by moving the chat's budget and retries
transient network and server errors with backoff. Chat actions ("typing…") live inside the
same budgets but come second: `Outbox.offer` sends one only into a slot that is free now and
never waits, queues or retries, so a typing action never holds up a reply beyond one bot slot.
Replies are sent as plain text (no `parse_mode`), so nothing a user or the model writes can
break formatting; the only markup, the quoted transcript of a voice note, is sent as entities.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage
from aiogram.methods.base import TelegramMethod
from aiogram.utils.formatting import BlockQuote, Text

from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.split import TELEGRAM_LIMIT, split_message, utf16_len
from engine.errors import DeliveryFailed
from engine.ports import OutgoingReply

if TYPE_CHECKING:  # the sink ends the wait its messages began
    from adapters.telegram.chat_actions import Typing

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
    _actions: OrderedDict[int, float] = field(default_factory=OrderedDict)  # next action at

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
        # No action while the reply waits; once it is sent it clears the chat's "typing…" on
        # the user's screen, so the next action may go at once.
        self._actions[chat_id] = chat_slot
        self._actions.move_to_end(chat_id)
        while len(self._actions) > MAX_TRACKED_CHATS:
            self._actions.popitem(last=False)
        return slot - now

    def offer(self, chat_id: int, refresh_s: float) -> float:
        """Take a slot for a chat action if one is free now (0.0); else how long until one
        may be (a reply may still take it first). Never waits.

        Free means: the bot's next slot has come (no reply is waiting for it), no reply of
        the chat waits for its slot, and the chat's last action since its last message is
        `refresh_s` old. The action takes the bot's slot (it counts in the bot's budget) but
        not the chat's, so the reply it announces is not held back by a chat's second.
        """
        now = self.clock()
        free = max(self._bot_next, self._actions.get(chat_id, 0.0))
        if now < free:
            return free - now
        self._bot_next = now + self.per_bot_s
        self._actions[chat_id] = now + refresh_s
        self._actions.move_to_end(chat_id)
        return 0.0

    def penalize(self, chat_id: int, seconds: float) -> None:
        """Telegram said to wait: nothing more goes to this chat for `seconds`."""
        until = self.clock() + seconds
        self._chats[chat_id] = max(self._chats.get(chat_id, 0.0), until)
        self._actions[chat_id] = max(self._actions.get(chat_id, 0.0), until)

    def forget(self, chat_id: int) -> None:
        self._chats.pop(chat_id, None)
        self._actions.pop(chat_id, None)


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

    async def offer(self, chat_id: int, method: TelegramMethod[Any], *, refresh_s: float) -> float:
        """Send a chat action if the budgets have a free slot now: 0.0 when it was sent, else
        the seconds until a slot may be free (`refresh_s` when it failed).

        Skipped (no slot), refused or failed, it is dropped, not queued or retried: the next
        refresh tries again, and a late "typing…" is worth less than the budget it takes.
        """
        name = type(method).__name__
        wait = self.pacer.offer(chat_id, refresh_s)
        if wait > 0:
            return wait
        try:
            await self.bot(method)
        except TelegramRetryAfter as exc:
            self.metrics.retry_after(exc.retry_after)
            self.metrics.sent(name, "rejected")
            self.pacer.penalize(chat_id, exc.retry_after)
            return exc.retry_after
        except TelegramAPIError as exc:
            self.metrics.sent(name, "rejected")
            log.debug("chat action failed: %s", type(exc).__name__)
            return refresh_s
        self.metrics.sent(name, "ok")
        return 0.0


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
