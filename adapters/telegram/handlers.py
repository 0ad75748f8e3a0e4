"""Thin routers: each handler turns one kind of Telegram update into one registry call.

A handler returns once the user's message is stored and queued (or the user was told why
not). It raises only for transient trouble (the store or Telegram briefly unreachable, a
shutdown), and then the update is not confirmed, so Telegram delivers it again.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandStart
from aiogram.methods import SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    User,
)

from actors.registry import Accepted, HandedOver, Registry, Repeated, Ticket
from adapters.telegram.chat_actions import Typing
from adapters.telegram.intake import BoundedMap, RateLimiter
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, user_of
from adapters.telegram.texts import TextKind, language_of, text
from engine.domain import Language, UserProfile
from engine.errors import StoreUnavailable, TransientError
from engine.persona import line
from engine.ports import Clock, Store

log = logging.getLogger(__name__)

BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""getFile refuses files over 20 MB on Telegram's own Bot API server."""

FORGET_YES = "forget:yes"
FORGET_NO = "forget:no"


class NotDownloadable(Exception):
    """Telegram will not hand this file over (permanent for this update)."""


class MailboxBusy(TransientError):
    """The user's mailbox is full and nothing was stored: the update must come again (a
    broker worker's partition waits for it rather than confirming a message it lost)."""


@dataclass(slots=True)
class FrontDoor:
    """What the handlers share: the engine, the outbound side and the intake bookkeeping."""

    registry: Registry
    store: Store
    clock: Clock
    outbox: Outbox
    typing: Typing
    metrics: TelegramMetrics
    limiter: RateLimiter
    allowed_users: frozenset[int] = frozenset()
    voice_max_seconds: int = 300
    download_timeout_s: float = 60.0
    defer_busy: bool = False
    """A full mailbox raises `MailboxBusy` (the update comes again) instead of telling the
    user "busy" and confirming: on a broker, where a later delivery is certain and cheap."""
    edits: BoundedMap[tuple[int, int], str] = field(default_factory=lambda: BoundedMap(100_000))
    apologised: BoundedMap[int, bool] = field(default_factory=lambda: BoundedMap(10_000))

    # -- helpers -------------------------------------------------------------------------------

    def language(self, user: User) -> Language:
        """The user's language for fixed lines: the live actor's, else Telegram's, else ru."""
        actor = self.registry.get(user_of(user.id))
        if actor is not None:
            return actor.language
        return language_of(user.language_code) or "ru"

    async def say(self, chat_id: int, kind: TextKind, language: Language, **values: object) -> None:
        await self.outbox.call(
            chat_id,
            _send(chat_id, text(kind, language, **values)),
        )

    async def admitted(self, message: Message) -> bool:
        """The allowlist; a stranger is told politely."""
        user = message.from_user
        assert user is not None
        if self.allowed_users and user.id not in self.allowed_users:
            self.metrics.update("message", "not_allowed")
            await self.say(message.chat.id, "not_allowed", self.language(user))
            return False
        return True

    def over_rate(self, user: User, kind: str = "message") -> bool:
        """Whether the message comes over the user's rate: it is still stored and answered,
        joining the turn ahead of it instead of costing the model a call of its own."""
        if self.limiter.allow(user.id):
            return False
        self.metrics.update(kind, "folded")
        return True

    async def accepted(self, message: Message, ticket: Ticket, *, arrived: float) -> None:
        """Show typing for a stored message, or send the registry's refusal."""
        chat_id = message.chat.id
        if isinstance(ticket, Repeated):  # stored before this delivery: answered from there
            self.metrics.update("message", "repeated")
            return
        if isinstance(ticket, Accepted):
            self.apologised.pop(chat_id)
            self.edits.put((chat_id, message.message_id), ticket.event_id)
            if not isinstance(ticket, HandedOver):  # else the process serving the user types
                self.typing.begin(chat_id, ticket.event_id, arrived=arrived)
            return
        if self.defer_busy:
            self.metrics.update("message", "busy_deferred")
            raise MailboxBusy("the user's mailbox is full; nothing was stored")
        await self.outbox.call(chat_id, _send(chat_id, ticket.reply))

    async def store_down(self, message: Message) -> None:
        """Apologise once per outage; the update stays unconfirmed and comes back."""
        chat_id = message.chat.id
        if self.apologised.get(chat_id) is None and message.from_user is not None:
            self.apologised.put(chat_id, True)
            notice = line("store_down", self.language(message.from_user), str(chat_id))
            await self.outbox.call(chat_id, _send(chat_id, notice))

    # -- handlers ------------------------------------------------------------------------------

    async def on_start(self, message: Message) -> None:
        user = _sender(message)
        if not await self.admitted(message):
            return
        user_id = user_of(user.id)
        profile = await self.store.get_profile(user_id)
        if profile is None:
            language = language_of(user.language_code) or "ru"
            await self.store.save_profile(UserProfile.new(user_id, self.clock.now(), language))
            kind: TextKind = "start_new"
        else:
            language, kind = profile.language, "start_again"
        await self.say(message.chat.id, kind, language, name=user.first_name or "сэр")

    async def on_help(self, message: Message) -> None:
        user = _sender(message)
        if await self.admitted(message):
            minutes = max(1, self.voice_max_seconds // 60)
            await self.say(message.chat.id, "help", self.language(user), minutes=minutes)

    async def on_forget(self, message: Message) -> None:
        user = _sender(message)
        if not await self.admitted(message):
            return
        language = self.language(user)
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(
                        text=text("forget_yes", language), callback_data=FORGET_YES
                    ),
                    InlineKeyboardButton(text=text("forget_no", language), callback_data=FORGET_NO),
                ]
            ]
        )
        chat_id = message.chat.id
        await self.outbox.call(
            chat_id,
            _send(chat_id, text("forget_ask", language), reply_markup=keyboard),
        )

    async def on_forget_answer(self, query: CallbackQuery, bot: Bot) -> None:
        user = query.from_user
        language = self.language(user)
        if query.data == FORGET_YES:
            await self.forget(user.id)
            kind: TextKind = "forget_done"
        else:
            kind = "forget_cancelled"
        await bot.answer_callback_query(query.id)
        chat_id = query.message.chat.id if query.message is not None else user.id
        await self.say(chat_id, kind, language)

    async def forget(self, telegram_id: int) -> None:
        """Erase everything the product holds about the user, here and in the store."""
        await self.registry.erase(user_of(telegram_id))
        self.edits.drop(lambda key: key[0] == telegram_id)
        self.apologised.pop(telegram_id)
        self.limiter.forget(telegram_id)
        self.typing.forget(telegram_id)
        self.outbox.pacer.forget(telegram_id)

    async def on_text(self, message: Message) -> None:
        arrived = time.monotonic()
        user = _sender(message)
        if not await self.admitted(message):
            return
        try:
            ticket = await self.registry.tell_text(
                user_of(user.id),
                message.text or "",
                language=language_of(user.language_code),
                origin=origin_of(message),
                joins=self.over_rate(user),
            )
        except StoreUnavailable:
            await self.store_down(message)
            raise
        await self.accepted(message, ticket, arrived=arrived)

    async def on_edit(self, edited: Message) -> None:
        arrived = time.monotonic()
        user = _sender(edited)
        chat_id = edited.chat.id
        new_text = edited.text or ""
        user_id = user_of(user.id)
        event_id = self.edits.get((chat_id, edited.message_id))
        if event_id is not None:
            try:
                ticket = await self.registry.tell_edit(user_id, event_id, new_text)
            except StoreUnavailable:
                await self.store_down(edited)
                raise
            if ticket is not None:
                self.metrics.update("edited_message", "replaced")
                return
        if not await self.admitted(edited):
            return
        correction = text("correction", self.language(user), text=new_text)
        try:
            ticket = await self.registry.tell_text(
                user_id,
                correction,
                language=language_of(user.language_code),
                origin=origin_of(edited, edit=True),
                joins=self.over_rate(user, "edited_message"),
            )
        except StoreUnavailable:
            await self.store_down(edited)
            raise
        self.metrics.update("edited_message", "correction")
        await self.accepted(edited, ticket, arrived=arrived)

    async def on_voice(self, message: Message, bot: Bot) -> None:
        arrived = time.monotonic()
        user = _sender(message)
        media = message.voice or message.audio
        assert media is not None
        if not await self.admitted(message):
            return
        # Counted, never refused or folded: a voice note has its own turn (it must be heard
        # first), and the transcriber has its own bound; texts after it may fold.
        self.limiter.allow(user.id)
        chat_id = message.chat.id
        language = self.language(user)
        if media.duration > self.voice_max_seconds:
            self.metrics.update("voice", "too_long")
            await self.say(
                chat_id,
                "voice_too_long",
                language,
                seconds=media.duration,
                limit=self.voice_max_seconds,
            )
            return
        if (media.file_size or 0) > BOT_API_DOWNLOAD_LIMIT:
            self.metrics.update("voice", "too_big")
            await self.say(chat_id, "voice_too_big", language, mb=BOT_API_DOWNLOAD_LIMIT >> 20)
            return
        placeholder = ("download", message.message_id)
        self.typing.begin(chat_id, placeholder, arrived=arrived)
        try:
            audio = await self._download(bot, media.file_id)
        except (TelegramBadRequest, NotDownloadable) as exc:  # "file is too big" and kin
            self.typing.end(chat_id, placeholder)
            log.info("voice note not downloadable: %s", exc)
            self.metrics.update("voice", "too_big")
            await self.say(chat_id, "voice_too_big", language, mb=BOT_API_DOWNLOAD_LIMIT >> 20)
            return
        except BaseException:
            self.typing.end(chat_id, placeholder)
            raise
        try:
            ticket = await self.registry.tell_voice(
                user_of(user.id),
                audio,
                language=language_of(user.language_code),
                origin=origin_of(message),
            )
        except StoreUnavailable:
            await self.store_down(message)
            raise
        finally:
            self.typing.end(chat_id, placeholder)
        await self.accepted(message, ticket, arrived=arrived)

    async def _download(self, bot: Bot, file_id: str) -> bytes:
        started = time.monotonic()
        file = await bot.get_file(file_id)
        if file.file_path is None:
            raise NotDownloadable("Telegram gave the file no download path")
        buffer = io.BytesIO()
        await bot.download_file(file.file_path, buffer, timeout=int(self.download_timeout_s))
        self.metrics.voice_download_seconds.observe(time.monotonic() - started)
        return buffer.getvalue()

    async def on_other(self, message: Message) -> None:
        user = _sender(message)
        if await self.admitted(message):
            self.metrics.update("message", "unsupported")
            await self.say(message.chat.id, "unsupported", self.language(user))


def origin_of(message: Message, *, edit: bool = False) -> str:
    """The store key of a message: a message id is unique in its (private) chat and the same
    in every delivery of its update, so a redelivered or retried update is recognised."""
    if edit:
        return f"tg:edit:{message.message_id}:{int(message.edit_date or 0)}"
    return f"tg:msg:{message.message_id}"


def _sender(message: Message) -> User:
    if message.from_user is None:  # channels post without a sender; filtered out earlier
        raise ValueError("a message without a sender")
    return message.from_user


def _send(
    chat_id: int, body: str, *, reply_markup: InlineKeyboardMarkup | None = None
) -> SendMessage:
    return SendMessage(chat_id=chat_id, text=body, parse_mode=None, reply_markup=reply_markup)


def build_router(door: FrontDoor) -> Router:
    """Private chats only: the butler serves one person at a time."""
    router = Router(name="butler")
    router.message.filter(F.chat.type == "private", F.from_user)
    router.edited_message.filter(F.chat.type == "private", F.from_user)
    router.message.register(door.on_start, CommandStart())
    router.message.register(door.on_help, Command("help"))
    router.message.register(door.on_forget, Command("forget"))
    router.callback_query.register(door.on_forget_answer, F.data.in_({FORGET_YES, FORGET_NO}))
    router.message.register(door.on_text, F.text)
    router.message.register(door.on_voice, F.voice | F.audio)
    router.message.register(door.on_other)
    router.edited_message.register(door.on_edit, F.text)
    return router
