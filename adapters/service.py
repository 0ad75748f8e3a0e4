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
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from adapters.admin.server import serve_admin
from adapters.app import App, open_app
from adapters.clock import SystemClock
from adapters.settings import Settings
from adapters.telegram.service import serve_telegram
from adapters.worker import start_worker
from engine.ports import OutgoingReply

log = logging.getLogger(__name__)


class UndeliverableSink:
    """Where replies go when no front door runs: they are stored already; log and drop."""

    async def deliver(self, reply: OutgoingReply) -> None:
        log.warning("reply not delivered: no Telegram front door (BUTLER_TELEGRAM_TOKEN unset)")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[App], None] | None = None,
    admin: bool = True,
    **overrides: Any,
) -> None:
    """Run until `stop` (SIGTERM or SIGINT by default), then drain and exit."""
    stop = stop if stop is not None else stop_on_signals()

    def around(app: App) -> AbstractAsyncContextManager[object]:
        return _extras(app, settings, admin=admin)

    if settings.telegram.token:
        await serve_telegram(settings, stop=stop, on_ready=on_ready, around=around, **overrides)
        return
    host, port = settings.admin_addr
    sys.stderr.write(
        "butler: BUTLER_TELEGRAM_TOKEN is not set: no Telegram bot, serving the engine and "
        f"the admin server only (http://{host}:{port}/admin/)\n"
    )
    async with (
        open_app(settings=settings, sink=UndeliverableSink(), **overrides) as app,
        around(app),
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
        clock=SystemClock(),
        metrics=app.metrics,
        interval_s=settings.worker_interval_s,
        idle_s=settings.worker_idle_s,
    )
    try:
        if admin:
            async with serve_admin(app, settings):
                yield
        else:
            yield
    finally:
        await worker.stop()
