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
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from actors.memory_worker import start_worker
from actors.ownership import process_owner_id
from adapters.admin.server import AdminConfig, PartitionsSource, check_exposure, serve_admin
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import DEFAULT_PORTS, App, Ports, open_app
from adapters.observability.metrics import StoreHealthMetrics, WorkerMetrics
from engine.errors import ConfigurationError, DeliveryFailed, StoreUnavailable
from engine.ports import OutgoingReply, Store

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


def check_data_dir(settings: Settings) -> None:
    """Make the data directory (and the SQLite file's) if absent and prove it writable.

    Raises:
        ConfigurationError: it cannot be made or written (a file in the way, no permission,
            a read-only mount).
    """
    places = {settings.data_dir}
    if settings.sqlite_path is not None:
        places.add(settings.sqlite_path.parent)
    for place in sorted(places):
        try:
            place.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=place):
                pass
        except OSError as exc:
            raise ConfigurationError(
                f"the data directory {place} cannot be written ({exc.strerror or exc}): "
                "set BUTLER_DATA_DIR (or BUTLER_STORE) to a writable directory"
            ) from None


def admin_config(settings: Settings) -> AdminConfig:
    return AdminConfig(
        addr=settings.admin_addr, token=settings.admin_token, trace_url=settings.trace_url
    )


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
        ConfigurationError: the admin address is exposed without a token, or the data
            directory cannot be written (checked before anything starts).
        TelegramUnavailable: the token is refused or the Bot API cannot be reached.
    """
    if admin:
        check_exposure(admin_config(settings))
    check_data_dir(settings)
    stop = stop if stop is not None else stop_on_signals()
    metrics = CollectorRegistry()
    if settings.broker_urls:
        await serve_broker(
            settings,
            ports=ports,
            stop=stop,
            on_ready=on_ready,
            admin=admin,
            telegram_session=telegram_session,
            metrics=metrics,
        )
        return
    if settings.telegram.token:
        from adapters.telegram.service import connect, serve_updates  # aiogram: seconds to import

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


async def serve_broker(
    settings: Settings,
    *,
    ports: Ports,
    stop: asyncio.Event,
    on_ready: Callable[[App], None] | None,
    admin: bool,
    telegram_session: AiohttpSession | None,
    metrics: CollectorRegistry,
) -> None:
    """A worker on the broker: no polling, no webhook; the bot only sends. Stops in order:
    the partitions first (no more intake), then the actors drain, then the bot closes.

    Raises:
        TelegramUnavailable: no token, or the Bot API refuses it (replies need the bot).
        BrokerUnavailable: the broker cannot be reached at start.
    """
    from actors.partitions import PartitionOwner
    from adapters.bootstrap import broker_worker
    from adapters.observability.metrics import BrokerMetrics
    from adapters.telegram.service import build_intake, connect

    async with AsyncExitStack() as stack:
        partition_log = ports.partition_log
        if partition_log is None:
            partition_log = await broker_worker.open_partition_log(settings)
            stack.push_async_callback(partition_log.close)
        tg = await stack.enter_async_context(
            connect(settings.telegram, metrics=metrics, session=telegram_session)
        )
        app = await stack.enter_async_context(
            open_app(settings, sink=tg.sink, ports=ports, metrics=metrics, recover=True)
        )
        intake = build_intake(
            tg,
            registry=app.registry,
            store=app.store,
            clock=app.clock,
            voice_max_seconds=int(settings.stt.max_seconds),
            defer_busy=True,  # a full mailbox stores nothing: the update must come again
        )
        instruments = BrokerMetrics(metrics, partitions=partition_log.partitions)
        owner = PartitionOwner(
            log=partition_log,
            leases=app.store,
            clock=app.clock,
            # The id this process claims users under, so both kinds of lease name one owner.
            owner=getattr(app.registry.leases.ownership, "owner", None) or process_owner_id(),
            ttl_s=settings.lease_ttl_s,
            handler=broker_worker.update_handler(intake, instruments),
            observer=broker_worker.SharedBotBudget(instruments, tg.outbox.pacer),
        )
        view = broker_worker.PartitionsView(owner, app.store, app.clock)
        await stack.enter_async_context(_extras(app, settings, admin=admin, partitions=view))
        await stack.enter_async_context(broker_worker.running(owner, instruments))
        log.info("broker worker %s: %s partitions", owner.owner, partition_log.partitions)
        if on_ready is not None:
            on_ready(app)
        await stop.wait()


STORE_CHECK_INTERVAL_S = 2.0
"""How often the service confirms its store is still the one it opened (readiness checks it
too): a removed data directory must fail readiness within seconds."""


async def watch_store(store: Store, metrics: StoreHealthMetrics, *, interval_s: float) -> None:
    """Check the store every `interval_s`; say so once (ERROR) when it fails, once when back."""
    failing = False
    while True:
        try:
            await store.check()
        except StoreUnavailable as exc:
            metrics.record(ok=False)
            if not failing:
                # The reason is the whole story; a traceback would only repeat it.
                log.error(  # noqa: TRY400
                    "store check failed: %s; not ready, messages are refused", exc
                )
            failing = True
        else:
            metrics.record(ok=True)
            if failing:
                log.info("store check passes again")
            failing = False
        await asyncio.sleep(interval_s)  # noqa: TID251 - a periodic job


@asynccontextmanager
async def _extras(
    app: App, settings: Settings, *, admin: bool, partitions: PartitionsSource | None = None
) -> AsyncIterator[None]:
    """What runs beside the intake: the admin server, the compression worker and the store
    watch."""
    watch = asyncio.create_task(
        watch_store(app.store, StoreHealthMetrics(app.metrics), interval_s=STORE_CHECK_INTERVAL_S)
    )
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
            async with serve_admin(app, admin_config(settings), partitions=partitions):
                yield
        else:
            yield
    finally:
        watch.cancel()
        with suppress(asyncio.CancelledError):
            await watch
        await worker.stop()
