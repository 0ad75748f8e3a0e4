"""`butler run`: the Telegram bot in front of the engine, by long polling or by webhook.

Delivery guarantee: an update is confirmed to Telegram only after its handler returned,
that is after the user's message was stored and queued (or the user was told why not).
Polling confirms through the `offset` of the next getUpdates, so the loop here is our own
rather than aiogram's (which moves the offset past an update whose handler failed). A
webhook confirms by answering 200; a transient failure answers 503 and Telegram retries.

Order: one user's updates are handled one after another, in update_id order; different
users' updates of one batch are handled concurrently.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import (
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import DeleteWebhook, SetWebhook
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from aiogram.utils.token import TokenValidationError
from aiohttp import web
from prometheus_client import CollectorRegistry

from actors.registry import Registry
from adapters.telegram.chat_actions import Typing
from adapters.telegram.config import TelegramSettings
from adapters.telegram.handlers import FrontDoor, build_router
from adapters.telegram.intake import RateLimiter, SeenUpdates
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox, Pacer, TelegramSink
from adapters.telegram.updates import (
    Poisoned,
    RawGetUpdates,
    read_batch,
    read_update,
    update_id_of,
)
from engine.errors import ButlerError, TransientError
from engine.ports import Clock, Store

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]

_TRANSIENT = (TransientError, TelegramNetworkError, TelegramServerError, TelegramRetryAfter)


class TelegramUnavailable(ButlerError):
    """The bot cannot start: no token, a refused token, or another instance polling."""


def update_kind(update: Update) -> str:
    """The update's kind; "unknown" for one of no kind aiogram knows (`{"update_id": N}`)."""
    try:
        return update.event_type
    except UpdateTypeLookupError:
        return "unknown"


def update_sender(update: Update) -> int | None:
    event = update.message or update.edited_message or update.callback_query
    user = getattr(event, "from_user", None)
    return user.id if user is not None else None


@dataclass(slots=True)
class Intake:
    """Feeds updates to the dispatcher: deduplicated, ordered per user, confirmed when safe."""

    bot: Bot
    dispatcher: Dispatcher
    metrics: TelegramMetrics
    seen: SeenUpdates = field(default_factory=SeenUpdates)
    _locks: dict[int, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    """Per user: the lock and how many deliveries hold or wait for it (dropped at zero)."""

    async def handle(self, update: Update) -> bool:
        """Handle one update; False when it must come again (a transient failure)."""
        kind = update_kind(update)
        if self.seen.seen(update.update_id):
            self.metrics.update(kind, "duplicate")
            return True
        if kind == "unknown":
            # Nothing handles it; refusing it would make Telegram deliver it again for a day.
            log.warning("update of no known kind ignored: update_id=%s", update.update_id)
            self.metrics.update(kind, "ignored")
            self.seen.remember(update.update_id)
            return True
        try:
            await self.dispatcher.feed_update(self.bot, update)
        except _TRANSIENT as exc:
            log.warning("update deferred: %s", type(exc).__name__)
            self.metrics.update(kind, "deferred")
            return False
        except Exception as exc:  # noqa: BLE001 - logged below, then dropped
            # A bug or an update we cannot read: retrying would wedge every later update.
            # Exception messages may quote the update (message text), so only where it failed.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(  # noqa: TRY400 - no text in logs
                "update dropped after %s at %s:%s", type(exc).__name__, where.filename, where.lineno
            )
            self.metrics.update(kind, "failed")
        else:
            self.metrics.update(kind, "handled")
        self.seen.remember(update.update_id)
        return True

    def give_up(self, poisoned: Poisoned) -> None:
        """Count and log an update that cannot be read, once however often it comes."""
        if poisoned.update_id is not None:
            if self.seen.seen(poisoned.update_id):
                return
            self.seen.remember(poisoned.update_id)
        log.error("poisoned update skipped: update_id=%s, %s", poisoned.update_id, poisoned.why)
        self.metrics.update("unknown", "poisoned")

    async def handle_batch(
        self, updates: Sequence[Update], *, poisoned: Sequence[Poisoned] = ()
    ) -> tuple[int | None, bool]:
        """Handle a getUpdates batch; returns the offset that confirms what is safe to confirm
        (None: nothing) and whether something must come again. `poisoned` updates (of the
        same batch) are given up: counted, logged and confirmed with the rest."""
        for bad in poisoned:
            self.give_up(bad)
        chains: dict[int, list[Update]] = {}
        for update in updates:
            key = update_sender(update)
            chains.setdefault(key if key is not None else -update.update_id, []).append(update)
        done: dict[int, bool] = {}

        async def run(chain: list[Update]) -> None:
            for update in chain:
                ok = await self.handle(update)
                done[update.update_id] = ok
                if not ok:
                    return  # later updates of this user must wait for this one

        async with anyio.create_task_group() as group:
            for chain in chains.values():
                group.start_soon(run, chain)
        done.update((bad.update_id, True) for bad in poisoned if bad.update_id is not None)
        offset = None
        for update_id in sorted(done.keys() | {update.update_id for update in updates}):
            if not done.get(update_id, False):
                return offset, True
            offset = update_id + 1
        return offset, False

    async def handle_in_order(self, update: Update) -> bool:
        """Webhook path: one user's concurrent deliveries are handled one at a time."""
        key = update_sender(update)
        if key is None:
            return await self.handle(update)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self.handle(update)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def poll(
    intake: Intake,
    stop: asyncio.Event,
    *,
    timeout_s: int,
    backoff: Callable[[int], float] = lambda n: min(30.0, 0.5 * 2**n),
) -> None:
    """Long-poll until `stop`; confirm the last handled batch before returning."""
    bot = intake.bot
    offset: int | None = None
    failures = 0
    try:
        while not stop.is_set():
            request = RawGetUpdates(
                offset=offset, timeout=timeout_s, allowed_updates=ALLOWED_UPDATES
            )
            fetched = await _unless_stopped(bot(request, request_timeout=timeout_s + 15), stop)
            if fetched is None:
                return
            kind, value = fetched
            if kind == "error":
                assert isinstance(value, BaseException)
                if isinstance(value, TelegramUnauthorizedError):
                    raise TelegramUnavailable("Telegram refused BUTLER_TELEGRAM_TOKEN") from value
                if isinstance(value, TelegramConflictError):
                    raise TelegramUnavailable(
                        "another process polls this bot (or a webhook is set): stop it first"
                    ) from value
                log.warning("getUpdates failed: %s", type(value).__name__)
                failures += 1
                await _wait(stop, backoff(failures))
                continue
            assert isinstance(value, list)
            if not value:
                failures = 0
                continue
            batch = read_batch(value, bot)
            confirmed, retry = await intake.handle_batch(batch.updates, poisoned=batch.poisoned)
            if confirmed is not None:
                offset = confirmed
            if retry:
                failures += 1
                await _wait(stop, backoff(failures))
            else:
                failures = 0
    finally:
        if offset is not None:
            # Confirm the last batch now: otherwise it would come again after a restart.
            with suppress(Exception):
                await bot(RawGetUpdates(offset=offset, timeout=0, limit=1))


async def _unless_stopped(call: Awaitable[Any], stop: asyncio.Event) -> tuple[str, object] | None:
    """Run `call` unless `stop` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(call)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        return None
    exc = task.exception()
    return ("error", exc) if exc is not None else ("ok", task.result())


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stop.wait()


def webhook_app(intake: Intake, path: str, secret: str) -> web.Application:
    """The aiohttp application Telegram posts updates to."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return web.json_response({"error": "wrong secret token"}, status=401)
        try:
            data = await request.json()
        except ValueError:
            intake.metrics.update("unknown", "malformed")
            log.warning("malformed update refused")
            return web.json_response({"error": "malformed update"}, status=400)
        update_id = update_id_of(data)
        if update_id is None:
            intake.metrics.update("unknown", "malformed")
            log.warning("update without an update_id refused")
            return web.json_response({"error": "malformed update"}, status=400)
        try:
            update = read_update(data, intake.bot)
        except ValueError as exc:
            # Refusing it would only bring it back for a day; nobody can ever read it.
            intake.give_up(Poisoned(update_id, str(exc)))
            return web.json_response({"ok": True})
        if await intake.handle_in_order(update):
            return web.json_response({"ok": True})
        return web.json_response({"error": "try again later"}, status=503)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(path, receive)
    return app


async def serve_webhook(intake: Intake, tg: TelegramSettings, stop: asyncio.Event) -> None:
    await run_webhook(lambda path, secret: webhook_app(intake, path, secret), intake.bot, tg, stop)


async def run_webhook(
    make_app: Callable[[str, str], web.Application],
    bot: Bot,
    tg: TelegramSettings,
    stop: asyncio.Event,
) -> None:
    """Serve `make_app(path, secret)` on BUTLER_WEBHOOK_LISTEN and set the webhook, until
    `stop` (shared by `butler run` and `butler front`)."""
    secret = tg.webhook_secret or secrets.token_urlsafe(32)
    path = urlsplit(tg.webhook_url).path or "/"
    host, _, port = tg.webhook_listen.rpartition(":")
    runner = web.AppRunner(make_app(path, secret), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or "127.0.0.1", int(port))
        await site.start()
        await bot(
            SetWebhook(
                url=tg.webhook_url,
                secret_token=secret,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,
            )
        )
        log.info("webhook mode: listening on %s", tg.webhook_listen)
        await stop.wait()
    finally:
        await runner.cleanup()  # stops intake; in-flight requests finish first


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
