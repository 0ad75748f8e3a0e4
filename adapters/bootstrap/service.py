"""`butler run` as one process: the engine, the admin server, the compression worker and,
with a token, the bot.

Without `BUTLER_TELEGRAM_TOKEN` the service still runs the engine and the admin server (so
operators can inspect and reset actors, and scrape metrics), and says so on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from actors.memory_worker import start_worker
from adapters.admin.server import AdminConfig, check_exposure, serve_admin
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import DEFAULT_PORTS, App, Ports, open_app
from adapters.observability.metrics import WorkerMetrics
from engine.errors import DeliveryFailed
from engine.ports import OutgoingReply

if TYPE_CHECKING:
    from aiogram.client.session.aiohttp import AiohttpSession

log = logging.getLogger(__name__)


class UndeliverableSink:
    """Where replies go when no front door runs: they stay owed in the store, and a service
    with a token sends them later."""

    async def deliver(self, reply: OutgoingReply) -> str:
        log.warning("reply not delivered: no Telegram front door (BUTLER_TELEGRAM_TOKEN unset)")
        raise DeliveryFailed("no front door runs in this process")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def admin_config(settings: Settings) -> AdminConfig:
    return AdminConfig(addr=settings.admin_addr, token=settings.admin_token)


async def serve(
    settings: Settings,
    *,
    ports: Ports = DEFAULT_PORTS,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[App], None] | None = None,
    admin: bool = True,
    telegram_session: AiohttpSession | None = None,
) -> None:
    """Run until `stop` (SIGTERM or SIGINT by default), then drain and exit.

    `ports` substitutes adapters (tests); `telegram_session` is the Bot API session to use
    (an emulator in tests; by default one for `BUTLER_TELEGRAM_API_URL` or Telegram).

    Raises:
        ConfigurationError: the admin address is exposed without a token (checked before
            anything starts).
        TelegramUnavailable: the token is refused or the Bot API cannot be reached.
    """
    if admin:
        check_exposure(admin_config(settings))
    stop = stop if stop is not None else stop_on_signals()
    metrics = CollectorRegistry()
    if settings.telegram.token:
        from adapters.telegram.service import connect, serve_updates  # aiogram: ~1 s to import

        # The bot is left last: replies of the drained actors still go out through it.
        async with (
            connect(settings.telegram, metrics=metrics, session=telegram_session) as tg,
            open_app(settings, sink=tg.sink, ports=ports, metrics=metrics, recover=True) as app,
            _extras(app, settings, admin=admin),
        ):
            if on_ready is not None:
                on_ready(app)
            await serve_updates(
                tg,
                registry=app.registry,
                store=app.store,
                clock=app.clock,
                voice_max_seconds=int(settings.stt.max_seconds),
                stop=stop,
            )
        return
    host, port = settings.admin_addr
    sys.stderr.write(
        "butler: BUTLER_TELEGRAM_TOKEN is not set: no Telegram bot, serving the engine and "
        f"the admin server only (http://{host}:{port}/admin/)\n"
    )
    async with (
        open_app(settings, sink=UndeliverableSink(), ports=ports, metrics=metrics) as app,
        _extras(app, settings, admin=admin),
    ):
        if on_ready is not None:
            on_ready(app)
        await stop.wait()


@asynccontextmanager
async def _extras(app: App, settings: Settings, *, admin: bool) -> AsyncIterator[None]:
    """What runs beside the intake: the admin server and the compression worker."""
    worker = start_worker(
        registry=app.registry,
        store=app.store,
        policy=settings.policy,
        clock=app.clock,
        metrics=WorkerMetrics(app.metrics),
        interval_s=settings.worker_interval_s,
        idle_s=settings.worker_idle_s,
    )
    try:
        if admin:
            async with serve_admin(app, admin_config(settings)):
                yield
        else:
            yield
    finally:
        await worker.stop()
