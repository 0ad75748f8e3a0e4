"""The one wiring function: builds every adapter from settings and wires them into actors.

`open_app(settings, sink=..., ports=Ports(...))` is used by every entry point and by the
tests. A port left `None` in `Ports` becomes the real adapter named by the settings; tests put
fakes there, typed by the engine's ports, so the wiring they run is the wiring users run.
Adapters are imported only when the settings choose them (start-up time).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from actors.deps import ActorDeps
from actors.observe import Observer
from actors.ownership import StoreUserLeases, process_owner_id
from actors.registry import Registry
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.settings import Settings
from adapters.observability.metrics import ActorCollector, ButlerMetrics
from engine.errors import ConfigurationError, OwnedElsewhere, ShuttingDown, StoreUnavailable
from engine.ports import (
    Clock,
    LanguageModel,
    Ownership,
    PartitionLog,
    ReplySink,
    Store,
    TokenCounter,
    Transcriber,
)
from engine.prompt import PromptBuilder, Template, parse_template
from engine.tokens import CalibratedEstimator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Templates:
    """The versioned prompt templates shipped in `adapters/bootstrap/templates/`."""

    persona: Template
    memory_summary: Template
    summarize: Template

    @classmethod
    def load(cls) -> Templates:
        folder = resources.files("adapters.bootstrap") / "templates"

        def read(name: str) -> Template:
            return parse_template((folder / name).read_text(encoding="utf-8"))

        return cls(read("persona.txt"), read("memory_summary.txt"), read("summarize.txt"))


@dataclass(frozen=True, slots=True)
class Ports:
    """Implementations to use instead of the ones the settings name (None: the real one).

    A store or model passed here is the caller's to close; the ones built here are closed
    when `open_app` exits.
    """

    store: Store | None = None
    llm: LanguageModel | None = None
    transcriber: Transcriber | None = None
    clock: Clock | None = None
    counter: TokenCounter | None = None
    observer: Observer | None = None
    ownership: Ownership | None = None
    """How this process claims users; None: a `user:<id>` store lease each."""
    partition_log: PartitionLog | None = None
    """The broker's log (`BUTLER_BROKER_URL`); None: NATS JetStream at those URLs. The
    caller's to close."""


DEFAULT_PORTS = Ports()
"""Every port built from the settings."""


@dataclass(frozen=True, slots=True)
class App:
    """A running engine: the registry to tell, and what operators look at."""

    settings: Settings
    registry: Registry
    store: Store
    llm: LanguageModel
    metrics: CollectorRegistry
    clock: Clock
    transcriber: Transcriber | None = None


GC_THRESHOLDS = (50_000, 20, 100)
"""Measured with `bench/engine_bench.py`: with 10k live actors (~430k tracked objects) the
default (700, 10, 10) ran 22 full collections in a 19 s run with pauses up to 246 ms; these
thresholds ran none and cut p99 by more than half."""


def tune_gc() -> None:
    """Collect the young generation less often: a server with many long-lived actors."""
    gc.set_threshold(*GC_THRESHOLDS)


async def open_store(settings: Settings) -> Store:
    """The store named by `BUTLER_STORE`: a SQLite path by default, or a MongoDB URI."""
    path = settings.sqlite_path
    if path is None:
        from adapters.storage.mongo import MongoStore

        return await MongoStore.open(settings.store, retention_days=settings.retention_days)
    from adapters.storage.sqlite import SqliteStore

    # A path that cannot hold the file is a setting to fix, said in one line (exit code 2).
    where = f"the SQLite store {path} (BUTLER_STORE, BUTLER_DATA_DIR)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, FileExistsError | NotADirectoryError):
            reason = "a file stands where a folder should be"
        raise ConfigurationError(f"cannot create the folder of {where}: {reason}") from exc
    try:
        return await SqliteStore.open(path)
    except StoreUnavailable as exc:
        if "unable to open" not in str(exc):
            raise
        if path.is_dir():  # kept transient: a worker's run fails and the next one tries again
            raise StoreUnavailable(f"cannot open {where}: it names a folder, not a file") from exc
        if path.exists() and os.access(path, os.W_OK):
            raise
        raise ConfigurationError(f"cannot open {where}: it is not writable here") from exc


def store_name(settings: Settings) -> str:
    """The store's location without credentials (a MongoDB URI may hold a password)."""
    if settings.sqlite_path is not None:
        return str(settings.sqlite_path)
    scheme, _, rest = settings.store.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2].partition('?')[0]}"


def make_counter(settings: Settings) -> TokenCounter:
    """The served model's tokenizer when configured, else the calibrated estimate."""
    if settings.tokenizer:
        from adapters.llm.tokenizer import HFTokenizerCounter

        return HFTokenizerCounter(settings.tokenizer)
    return CalibratedEstimator()


def make_llm(settings: Settings) -> LanguageModel:
    """The HTTP chain, then (with `BUTLER_LLM_LOCAL_MODEL`) the in-process model."""
    from adapters.llm.openai_http import LLMSettings, OpenAIChatModel

    http = OpenAIChatModel(
        settings=LLMSettings(
            urls=settings.llm_urls,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
            total_timeout_s=settings.llm_total_timeout_s,
            retries=settings.llm_retries,
        )
    )
    if not settings.llm_local_model:
        return http
    from pathlib import Path

    from adapters.llm.chain import FallbackChain
    from adapters.llm.ctranslate2_local import CTranslate2ChatModel, LocalModelSettings

    local = CTranslate2ChatModel(LocalModelSettings(Path(settings.llm_local_model)))
    return FallbackChain(http, local, primary_endpoints=len(settings.llm_urls))


def make_transcriber(settings: Settings) -> Transcriber:
    """Whisper on the CPU; cheap to build: the model loads on the first voice note.

    Raises:
        SettingsError: `BUTLER_WHISPER_MODEL` names neither a directory nor a known model.
    """
    from adapters.stt.whisper import WhisperTranscriber

    return WhisperTranscriber(settings.stt, data_dir=settings.data_dir)


def actor_deps(
    settings: Settings,
    *,
    sink: ReplySink,
    store: Store,
    llm: LanguageModel,
    ports: Ports = DEFAULT_PORTS,
    metrics: CollectorRegistry | None = None,
) -> ActorDeps:
    """What every actor of a process shares, built from settings and `ports` (no I/O)."""
    counter = ports.counter if ports.counter is not None else make_counter(settings)
    observer = ports.observer
    if observer is None:
        observer = ButlerMetrics(metrics if metrics is not None else CollectorRegistry())
    transcriber = ports.transcriber
    if transcriber is None:
        transcriber = make_transcriber(settings)
    templates = Templates.load()
    return ActorDeps(
        store=store,
        llm=llm,
        sink=sink,
        clock=ports.clock or SystemClock(),
        counter=counter,
        prompts=PromptBuilder(
            templates.persona, templates.memory_summary, counter, settings.budget
        ),
        summarize=templates.summarize,
        observer=observer,
        tracer=trace.get_tracer("butler"),
        transcriber=transcriber,
        policy=settings.policy,
        settings=settings.actors,
    )


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    sink: ReplySink,
    ports: Ports = DEFAULT_PORTS,
    metrics: CollectorRegistry | None = None,
    recover: bool = False,
    hand_over: bool = True,
    on_lost: Callable[[str], None] | None = None,
) -> AsyncIterator[App]:
    """Build, start and finally drain and close the engine.

    `metrics` is the Prometheus registry the engine's instruments go on (a new one by
    default). `recover=True` (a service) wakes, in the background, every user whose messages
    were stored but not answered before the last stop; otherwise a user's actor picks them up
    on the user's next message, and now and then takes over users that another, dead,
    process left unanswered. A user is served only under a claim of this process
    (`Ports.ownership`, else a store lease per user for `BUTLER_LEASE_TTL_S`): a message for a
    user another process serves is stored and handed to it (`hand_over`), or refused with
    `OwnedElsewhere`; `on_lost` hears of a user this process stopped serving.
    """
    async with AsyncExitStack() as stack:
        store = ports.store
        if store is None:
            store = await open_store(settings)
            stack.push_async_callback(store.close)
        llm = ports.llm
        if llm is None:
            llm = make_llm(settings)
            closer = getattr(llm, "close", None)
            if closer is not None:
                stack.push_async_callback(closer)
        metrics = metrics if metrics is not None else CollectorRegistry()
        deps = actor_deps(settings, sink=sink, store=store, llm=llm, ports=ports, metrics=metrics)
        ownership = ports.ownership or StoreUserLeases(
            store, deps.clock, owner=process_owner_id(), ttl_s=settings.lease_ttl_s
        )
        registry = await stack.enter_async_context(
            Registry(deps, ownership, hand_over=hand_over, on_lost=on_lost, adopt=recover)
        )
        metrics.register(ActorCollector(registry))
        background: list[asyncio.Task[Any]] = [
            asyncio.create_task(_retention_loop(store, deps.clock, settings))
        ]
        if recover:
            background.append(asyncio.create_task(recover_owed(registry, store)))
        try:
            yield App(settings, registry, store, llm, metrics, deps.clock, deps.transcriber)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with suppress(asyncio.CancelledError):
                    await task


async def recover_owed(registry: Registry, store: Store, *, page: int = 500) -> int:
    """Activate the actor of every user with unanswered messages or undelivered replies;
    returns how many.

    One pass over the profiles at start (cheap indexed reads per user), so that messages
    accepted before a stop or crash are answered, and replies stored but not sent go out,
    without waiting for the user to write again. Safe to interrupt at any point: the next
    start makes the same pass over what is still owed.
    """
    woken = 0
    after = ""
    while True:
        try:
            profiles = await store.list_profiles(limit=page, after=after)
            for profile in profiles:
                user_id = profile.user_id
                owed = await store.unanswered(user_id) or await store.owed_replies(user_id)
                try:
                    if owed and await registry.wake(user_id):
                        woken += 1
                except OwnedElsewhere:
                    # Another process serves the user, or served it and died: its lease
                    # expires and a renewal round claims the user then, unless answered.
                    registry.leases.watch(user_id)
        except StoreUnavailable:
            log.warning("recovery sweep stopped: store unavailable; users recover on next message")
            return woken
        except ShuttingDown:
            return woken
        if len(profiles) < page:
            if woken:
                log.info("recovered users with unanswered messages", extra={"users": woken})
            return woken
        after = profiles[-1].user_id


async def _retention_loop(store: Store, clock: Clock, settings: Settings) -> None:
    """Delete events older than the retention period now and then every interval."""
    period = timedelta(days=settings.retention_days)
    while True:
        try:
            removed = await store.purge_older_than(clock.now() - period)
            await store.purge_cache(clock.now())
            if removed:
                log.info("retention purge", extra={"events_removed": removed})
        except StoreUnavailable:
            log.warning("retention purge skipped: store unavailable")
        await asyncio.sleep(settings.retention_interval_s)  # noqa: TID251 - a periodic job
