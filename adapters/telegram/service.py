"""`butler run`: the Telegram bot in front of the engine, by long polling or by webhook.

Delivery guarantee: an update is confirmed to Telegram only after its handler returned,
that is after the user's message was stored and queued (or the user was told why not).
Polling (`polling.py`) confirms through the `offset` of the next getUpdates, with a loop of
our own rather than aiogram's (which moves the offset past an update whose handler failed).
A webhook (`webhook.py`) confirms by answering 200; a transient failure answers 503 and
Telegram retries. `dispatch.py` feeds both to the routers.

Order: one user's updates are handled one after another, in update_id order; different
users' updates of one batch are handled concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.methods import DeleteWebhook
from aiogram.utils.token import TokenValidationError
from prometheus_client import CollectorRegistry

from actors.registry import Registry
from adapters.telegram.chat_actions import Typing
from adapters.telegram.config import TelegramSettings
from adapters.telegram.dispatch import Intake
from adapters.telegram.handlers import FrontDoor, build_router
from adapters.telegram.intake import RateLimiter
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, Pacer, TelegramSink
from adapters.telegram.polling import TelegramUnavailable, poll
from adapters.telegram.webhook import serve_webhook
from engine.ports import Clock, Store

__all__ = [
    "TelegramBot",
    "TelegramUnavailable",
    "build_intake",
    "connect",
    "make_session",
    "serve_updates",
]

log = logging.getLogger(__name__)


def make_session(
    tg: TelegramSettings,
    *,
    api: TelegramAPIServer | None = None,
    middlewares: Sequence[BaseRequestMiddleware] = (),
) -> AiohttpSession:
    server = api or (TelegramAPIServer.from_base(tg.api_url) if tg.api_url else PRODUCTION)
    session = AiohttpSession(api=server)
    for middleware in middlewares:
        session.middleware(middleware)
    return session


@dataclass(frozen=True, slots=True)
class TelegramBot:
    """A bot whose token Telegram accepted: its outbound side (the engine's reply sink) and
    what the intake needs. Made by `connect`."""

    bot: Bot
    settings: TelegramSettings
    metrics: TelegramMetrics
    outbox: Outbox
    typing: Typing
    sink: TelegramSink
    username: str


@asynccontextmanager
async def connect(
    tg: TelegramSettings,
    *,
    metrics: CollectorRegistry,
    session: AiohttpSession | None = None,
) -> AsyncIterator[TelegramBot]:
    """Check the token with getMe, then yield the bot; close its session on exit.

    Raises:
        TelegramUnavailable: no token, a malformed or refused one, or no Bot API server.
    """
    if not tg.token:
        raise TelegramUnavailable(
            "BUTLER_TELEGRAM_TOKEN is not set: ask @BotFather for a bot token and export it"
        )
    try:
        bot = Bot(tg.token, session=session or make_session(tg))
    except TokenValidationError as exc:
        raise TelegramUnavailable(f"BUTLER_TELEGRAM_TOKEN is malformed: {exc}") from None
    instruments = TelegramMetrics(metrics)
    outbox = Outbox(bot, instruments, pacer=Pacer(per_bot_s=1 / tg.bot_sends_per_s))
    typing = Typing(outbox, instruments)
    sink = TelegramSink(outbox, typing, instruments, quote_transcript=tg.quote_transcript)
    try:
        try:
            me = await bot.get_me()
        except TelegramUnauthorizedError as exc:
            raise TelegramUnavailable("Telegram refused BUTLER_TELEGRAM_TOKEN") from exc
        except TelegramNetworkError as exc:
            raise TelegramUnavailable(f"cannot reach the Bot API server: {exc.message}") from exc
        log.info("serving Telegram bot @%s", me.username)
        yield TelegramBot(bot, tg, instruments, outbox, typing, sink, me.username or "")
    finally:
        await typing.close()
        await bot.session.close()


async def serve_updates(
    telegram: TelegramBot,
    *,
    registry: Registry,
    store: Store,
    clock: Clock,
    voice_max_seconds: int,
    stop: asyncio.Event,
) -> None:
    """Take updates (long polling, or a webhook when configured) until `stop` is set.

    Replies of turns still running when this returns go out through `telegram.sink` while
    the caller drains the registry.
    """
    intake = build_intake(
        telegram, registry=registry, store=store, clock=clock, voice_max_seconds=voice_max_seconds
    )
    tg = telegram.settings
    if tg.webhook_url:
        await serve_webhook(intake, tg, stop)
    else:
        await telegram.bot(DeleteWebhook(drop_pending_updates=False))
        await poll(intake, stop, timeout_s=tg.polling_timeout_s)
    log.info("intake stopped; draining actors")


def build_intake(
    telegram: TelegramBot,
    *,
    registry: Registry,
    store: Store,
    clock: Clock,
    voice_max_seconds: int,
    defer_busy: bool = False,
) -> Intake:
    """The front door, its router and the intake that feeds it: what polling, the webhook
    and a broker worker share. `defer_busy`: a full mailbox makes the update come again
    (a broker) rather than telling the user "busy" and confirming it."""
    tg = telegram.settings
    door = FrontDoor(
        registry=registry,
        store=store,
        clock=clock,
        outbox=telegram.outbox,
        typing=telegram.typing,
        metrics=telegram.metrics,
        limiter=RateLimiter(tg.rate_per_minute, tg.rate_burst),
        allowed_users=tg.allowed_users,
        voice_max_seconds=voice_max_seconds,
        defer_busy=defer_busy,
    )
    dispatcher = Dispatcher()
    dispatcher.include_router(build_router(door))
    return Intake(telegram.bot, dispatcher, telegram.metrics)
