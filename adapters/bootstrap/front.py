"""`butler front`: the scale-out front door. Takes Telegram updates (long polling while it
holds the poller lease, or a webhook), publishes each raw update to its partition of the
broker, and confirms it to Telegram only after the broker did. Serves /healthz and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.methods import DeleteWebhook
from aiogram.utils.token import TokenValidationError
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from adapters.bootstrap.settings import Settings
from adapters.broker.kv_lease import KvLease
from adapters.broker.nats import NatsPartitionLog
from adapters.telegram.relay import FrontMetrics, Relay, poll_and_relay, relay_webhook_app
from adapters.telegram.service import TelegramUnavailable, make_session
from adapters.telegram.webhook import run_webhook
from engine.errors import BrokerUnavailable, ConfigurationError

log = logging.getLogger(__name__)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def check_front(settings: Settings) -> None:
    """Refuse to start without a broker, a token, or with an exposed unguarded health port.

    Raises:
        ConfigurationError: one clear line naming the variable.
    """
    if not settings.broker_urls:
        raise ConfigurationError(
            "the front door (butler front) needs BUTLER_BROKER_URL: the NATS servers workers read"
        )
    if not settings.telegram.token:
        raise ConfigurationError("the front door (butler front) needs BUTLER_TELEGRAM_TOKEN")
    host, _ = settings.admin_addr
    if not settings.admin_token and not _is_loopback(host):
        raise ConfigurationError(
            f"BUTLER_ADMIN_ADDR {host} is not a loopback address: set BUTLER_ADMIN_TOKEN"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _connect_until(settings: Settings, stop: asyncio.Event) -> NatsPartitionLog | None:
    """Connect to the broker, retrying until `stop` (a front door waits for its broker)."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await NatsPartitionLog.connect(
                settings.broker_urls,
                partitions=settings.broker_partitions,
                replicas=settings.broker_replicas,
            )
        except BrokerUnavailable as exc:
            log.warning("%s; trying again in %.1f s", exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None


@contextlib.asynccontextmanager
async def _health(
    settings: Settings, registry: CollectorRegistry, ready: Callable[[], bool]
) -> AsyncIterator[str]:
    async def healthz(_request: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ok" if ok else "waiting"}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = settings.admin_addr
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0]
        url = f"http://{bound[0]}:{bound[1]}"
        log.info("front door health and metrics on %s", url)
        yield url
    finally:
        await runner.cleanup()


async def _bot(settings: Settings, session: AiohttpSession | None) -> Bot:
    tg = settings.telegram
    try:
        bot = Bot(tg.token, session=session or make_session(tg))
    except TokenValidationError as exc:
        raise TelegramUnavailable(f"BUTLER_TELEGRAM_TOKEN is malformed: {exc}") from None
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError as exc:
        await bot.session.close()
        raise TelegramUnavailable("Telegram refused BUTLER_TELEGRAM_TOKEN") from exc
    except TelegramNetworkError as exc:
        await bot.session.close()
        raise TelegramUnavailable(f"cannot reach the Bot API server: {exc.message}") from exc
    log.info("front door for Telegram bot @%s", me.username)
    return bot


async def serve_front(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    session: AiohttpSession | None = None,
) -> None:
    """Run the front door until `stop` (SIGTERM or SIGINT by default); the offset of what was
    published is confirmed before returning.

    Raises:
        ConfigurationError: no broker URL, no token, or an exposed unguarded health port.
        TelegramUnavailable: the token is refused or the Bot API cannot be reached.
    """
    check_front(settings)
    stop = stop if stop is not None else _stop_on_signals()
    registry = CollectorRegistry()
    metrics = FrontMetrics(registry)
    holder: list[NatsPartitionLog] = []

    def ready() -> bool:
        return bool(holder) and holder[0].client.is_connected

    async with _health(settings, registry, ready):
        bot = await _bot(settings, session)
        try:
            broker = await _connect_until(settings, stop)
            if broker is None:
                return
            holder.append(broker)
            try:
                await _relay(settings, bot, broker, metrics, stop)
            finally:
                await broker.close()
        finally:
            await bot.session.close()


async def _relay(
    settings: Settings,
    bot: Bot,
    broker: NatsPartitionLog,
    metrics: FrontMetrics,
    stop: asyncio.Event,
) -> None:
    tg = settings.telegram
    relay = Relay(broker.publish_checked, settings.broker_partitions, metrics)
    if tg.webhook_url:
        await run_webhook(
            lambda path, secret: relay_webhook_app(relay, path, secret), bot, tg, stop
        )
        return
    await bot(DeleteWebhook(drop_pending_updates=False))
    lease = KvLease(
        broker.client,
        owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        ttl_s=settings.lease_ttl_s,
        replicas=settings.broker_replicas,
        on_change=lambda held: metrics.poller_leader.set(1 if held else 0),
    )
    leasing = asyncio.create_task(lease.run(stop))
    try:
        await poll_and_relay(
            relay,
            bot,
            stop,
            gained=lease.gained,
            lost=lease.lost,
            timeout_s=tg.polling_timeout_s,
        )
    finally:
        stop.set()
        await leasing
