"""The whole engine under load: real actors, the real SQLite store, a zero-latency model.

N users each send M messages through `Registry.tell_text`; `--concurrency` workers each keep
one message in flight (send, wait for its reply, send the next). Everything except the model is
production code: `Registry` + `UserActor`, `SqliteStore` on a temporary file, the calibrated
token estimator, the shipped prompt templates, `ButlerMetrics` on a fresh Prometheus registry
and (by default) an OpenTelemetry SDK `TracerProvider` with no exporter, so every span is
created, filled and ended as in production but sent nowhere. `--tracing off` uses the no-op API.

Phases, all in one process and one event loop, each bounded by a deadline (and a watchdog,
`--deadline`, dumps every stack and exits should anything still hang):

1. queue floor: the same number of messages through plain `asyncio.Queue` producer/consumer
   pairs at the same concurrency, doing no work (the event loop's own ceiling);
2. throughput: every user's first message (activation, first contact), then the other rounds
   on warm actors, at saturation: rates, end-to-end latency from `tell_text` to delivery,
   service time from `TurnFinished.service_s`, CPU per message, cyclic-GC pauses;
3. unloaded: one message at a time on warm actors (service time with no queueing);
4. memory: `--memory-users` fresh users, one message each, under `tracemalloc`; then every
   actor passivates, and a second, smaller cycle checks nothing accumulates;
5. transitions: the cost of one `Lifecycle.fire` on the shared machine.

Reading the output: at saturation `--concurrency` messages share one event loop, so by
Little's law latency is concurrency / rate, and a turn's own awaits (two store round trips)
queue behind the other messages' work: `service_p50_ms` there is mostly waiting for the loop.
The engine's cost per message is `loop_cpu_us_per_msg` (1e6 / it is the rate the loop could
sustain) and, without queueing, `unloaded_service_p50_ms`.

It prints one JSON line. Run:
    .venv/bin/python -m bench.engine_bench [--users 10000] [--messages-per-user 2]
        [--concurrency 100] [--tracing sdk|off] [--memory-users 10000]
        [--profile sample|cprofile] [--memory-detail] [--gc-threshold 50000,20,100]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import faulthandler
import gc
import heapq
import io
import json
import os
import platform
import pstats
import signal
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from actors.deps import ActorDeps, ActorSettings
from actors.machine import Record
from actors.observe import Observation, Observer, TurnFinished
from actors.registry import Accepted, Registry, Rejected
from actors.user_actor import UserActor
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.wiring import Templates, tune_gc
from adapters.observability.metrics import ButlerMetrics
from adapters.storage.sqlite import SqliteStore
from engine.compression import CompressionPolicy
from engine.lifecycle import Phase, Trigger
from engine.ports import Clock, Completion, CompletionRequest, OutgoingReply
from engine.prompt import Budget, PromptBuilder
from engine.tokens import CalibratedEstimator

# Messages cycle through these, so every run sends the same texts in the same order.
TEXTS = (
    "Добрый вечер! Напомни мне завтра про встречу с бухгалтером в 10:00, пожалуйста.",
    "What is on my calendar for Friday afternoon?",
    "Альфред, подскажи рецепт простого ужина на двоих.",
    "Please remind me to call my mother on Sunday.",
)
REPLY = Completion(
    text="Разумеется, сэр. Будет исполнено.",
    model="bench-zero-latency",
    endpoint=0,
    prompt_tokens=120,
    completion_tokens=12,
)


class ZeroLatencyLLM:
    """A `LanguageModel` that answers at once with a fixed short completion."""

    async def complete(self, request: CompletionRequest) -> Completion:
        return REPLY

    async def probe(self) -> bool:
        return True


class FutureSink:
    """A `ReplySink` that resolves the future of the message a reply answers.

    The future's value is the `perf_counter` time of delivery, so latencies end when the
    engine hands the reply over, not when the waiting worker happens to be scheduled.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def _future(self, event_id: str) -> asyncio.Future[float]:
        future = self._waiting.get(event_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[event_id] = future
        return future

    async def deliver(self, reply: OutgoingReply) -> str:
        future = self._future(reply.reply_to)
        if reply.kind == "reply":
            future.set_result(time.perf_counter())
        else:  # the benchmark measures the happy path; anything else is a failure
            future.set_exception(RuntimeError(f"unexpected {reply.kind} reply: {reply.text}"))
        return "bench"

    async def wait(self, event_id: str) -> float:
        try:
            return await self._future(event_id)
        finally:
            del self._waiting[event_id]


class ServiceTimes:
    """The production observer (`ButlerMetrics`) plus a tap on `TurnFinished.service_s`."""

    def __init__(self, inner: Observer) -> None:
        self._inner = inner
        self.samples: list[float] | None = None

    def record(self, observation: Observation) -> None:
        self._inner.record(observation)
        if self.samples is not None and type(observation) is TurnFinished:
            self.samples.append(observation.service_s)


class SteppedClock:
    """Wall time is real; monotonic time stands still until `advance` moves it.

    Used only by the memory phase: while actors are being activated and measured no idle
    timeout can pass, however slow tracing memory makes the run; `advance` then makes every
    actor idle for longer than its timeout, and each retires when its own timer fires.
    """

    def __init__(self) -> None:
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds


@dataclass(slots=True)
class _Record:
    """The smallest record `Lifecycle.fire` accepts (the machine's cost alone)."""

    state: str = Phase.IDLE.value
    breaker_open: bool = False

    def on_transition(self, source: Phase, dest: Phase, trigger: Trigger) -> None:
        return None


class Sampler:
    """A sampling profiler of the calling thread: a helper thread looks at its stack every
    `interval_s` and counts, per function, the samples it was running in (self) or under
    (inclusive). Much less distorting than cProfile for tight pure-Python loops, but biased
    towards points where the loop releases the GIL (`select`): compare the other entries with
    each other, as shares of the busy samples."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        self._target = threading.get_ident()
        self._interval = interval_s
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.samples = 0
        self.own: Counter[str] = Counter()
        self.under: Counter[str] = Counter()

    def start(self) -> None:
        self._running.set()
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        self._thread.join()

    def _run(self) -> None:
        while self._running.is_set():
            time.sleep(self._interval)
            frame = sys._current_frames().get(self._target)
            if frame is None:
                continue
            self.samples += 1
            self.own[_where(frame)] += 1
            seen: set[str] = set()
            while frame is not None:
                seen.add(_where(frame))
                frame = frame.f_back
            self.under.update(seen)

    def report(self, top: int = 40) -> str:
        n = max(self.samples, 1)
        lines = [f"{self.samples} samples of the event loop's thread", "self%  function"]
        lines += [f"{c / n:6.1%} {k}" for k, c in self.own.most_common(top)]
        lines += ["", "incl%  function"]
        lines += [f"{c / n:6.1%} {k}" for k, c in self.under.most_common(top)]
        return "\n".join(lines)


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_name}"


class GcPauses:
    """Times the cyclic garbage collector's runs (each one stops the event loop)."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.total += pause
        self.longest = max(self.longest, pause)
        self.full += info["generation"] == 2

    def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)


Job = tuple[str, str]


def jobs(prefix: str, users: int, rounds: range) -> Iterator[Job]:
    """Round by round, every user once: (user id, text). Ids are made lazily, on demand."""
    for r in rounds:
        for u in range(users):
            yield f"{prefix}-{u:05d}", TEXTS[(u + r) % len(TEXTS)]


async def worker(
    registry: Registry, sink: FutureSink, work: Iterator[Job], latencies: list[float] | None
) -> None:
    """Send one message, wait for its reply, repeat until `work` runs out."""
    for user_id, text in work:
        started = time.perf_counter()
        match await registry.tell_text(user_id, text):
            case Accepted(event_id):
                delivered = await sink.wait(event_id)
            case Rejected(reply):
                raise RuntimeError(f"message refused: {reply}")
        if latencies is not None:
            latencies.append(delivered - started)


async def drive(
    registry: Registry,
    sink: FutureSink,
    work: Iterator[Job],
    *,
    concurrency: int,
    latencies: list[float] | None,
    deadline_s: float,
) -> float:
    """Run `work` on `concurrency` workers; return the elapsed seconds."""
    started = time.perf_counter()
    async with asyncio.timeout(deadline_s), asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker(registry, sink, work, latencies))
    return time.perf_counter() - started


async def queue_floor(messages: int, concurrency: int) -> float:
    """Messages per second through bare asyncio.Queue request/reply pairs doing no work."""
    shared = iter(range(messages))

    async def pair() -> None:
        requests: asyncio.Queue[int] = asyncio.Queue()
        replies: asyncio.Queue[int] = asyncio.Queue()

        async def consumer() -> None:
            while (item := await requests.get()) >= 0:
                replies.put_nowait(item)

        task = asyncio.create_task(consumer())
        for item in shared:
            requests.put_nowait(item)
            await replies.get()
        requests.put_nowait(-1)
        await task

    started = time.perf_counter()
    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(pair())
    return messages / (time.perf_counter() - started)


def fire_cost_us(deps: ActorDeps, record: Record, rounds: int = 20_000) -> float:
    """Microseconds per `Lifecycle.fire` on `record` (a hear_text/replied pair per round)."""
    fire = deps.lifecycle.fire
    started = time.perf_counter()
    for _ in range(rounds):
        fire(record, Trigger.HEAR_TEXT)
        fire(record, Trigger.REPLIED)
    return (time.perf_counter() - started) / (2 * rounds) * 1e6


def cuts_ms(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    if len(samples) < 2:
        return round(samples[0] * 1000, 3), round(samples[0] * 1000, 3)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return round(cuts[49] * 1000, 3), round(cuts[98] * 1000, 3)


def make_deps(
    store: SqliteStore, sink: FutureSink, observer: Observer, tracing: str, token_budget: int = 0
) -> ActorDeps:
    """Actor dependencies as `adapters.bootstrap.wiring` builds them, with the bench's model."""
    templates = Templates.load()
    counter = CalibratedEstimator()
    if tracing == "sdk":
        provider = TracerProvider()  # no span processor: spans are recorded, then dropped
        trace.set_tracer_provider(provider)
        tracer: trace.Tracer = provider.get_tracer("butler")
    else:
        tracer = trace.NoOpTracer()
    clock: Clock = SystemClock()
    return ActorDeps(
        store=store,
        llm=ZeroLatencyLLM(),
        sink=sink,
        clock=clock,
        counter=counter,
        prompts=PromptBuilder(templates.persona, templates.memory_summary, counter, Budget()),
        summarize=templates.summarize,
        observer=observer,
        tracer=tracer,
        policy=CompressionPolicy(),
        # Usage is counted after every answer; a budget adds the read at each turn's start.
        settings=ActorSettings(token_budget_daily=token_budget),
    )


async def measure_memory(
    deps: ActorDeps, sink: FutureSink, args: argparse.Namespace
) -> dict[str, Any]:
    """Bytes per live idle actor, and per actor after all of them passivated.

    Method: `tracemalloc` traces Python's allocators only (PyMem/PyObject), so SQLite's page
    cache and statement cache, which SQLite allocates with its own malloc, are not counted;
    neither is anything allocated before tracing starts (the store, templates, metrics, the
    machine). With a warm process (the throughput phase ran first) and a fresh registry, we
    take the traced total after a full GC, let N new users send one message each (one live
    idle actor per user afterwards: actor, mailbox, breaker, task and coroutine frames, idle
    timer, registry entry), collect again and divide the growth by N. Latencies are not kept
    in this phase, the sink forgets each future once awaited, and rows the DB thread decodes
    are garbage by then, so the growth is what the live actors hold. Then the clock jumps
    past the idle timeout, every actor retires when its own timer fires (we wait for the
    registry to empty, with a deadline), and the growth left over is divided by N again.

    Cancelled timers: asyncio leaves a cancelled timer in its heap until its due time or a
    clean-up (when over half the heap is cancelled), and the timer keeps the context it was
    made in. Each turn's `asyncio.timeout` around the model call (120 s by default) thus pins
    that turn's `llm.chat` span for a while after the turn. Whether asyncio has cleaned up yet
    when we measure is chance, so before each measurement we drop the cancelled timers as
    asyncio's own clean-up does, and report what they held separately
    (`bytes_pinned_by_cancelled_timers`, per actor; transient, bounded by the heap's size).
    """
    clock = SteppedClock()
    settings = replace(deps.settings, idle_timeout_s=args.idle_timeout)
    mem_deps = replace(deps, clock=clock, settings=settings)
    users = args.memory_users
    async with Registry(mem_deps) as registry:
        gc.collect()
        tracemalloc.start(args.trace_frames)
        base_snapshot = tracemalloc.take_snapshot() if args.memory_detail else None
        base = tracemalloc.get_traced_memory()[0]
        elapsed = await drive(
            registry,
            sink,
            jobs("mem", users, range(1)),
            concurrency=args.concurrency,
            latencies=None,
            deadline_s=300,
        )
        gc.collect()
        raw_bytes = tracemalloc.get_traced_memory()[0] - base
        stale_timers = purge_cancelled_timers()
        gc.collect()
        live_bytes = tracemalloc.get_traced_memory()[0] - base
        live_actors = len(registry)
        if base_snapshot is not None:
            top = tracemalloc.take_snapshot().compare_to(base_snapshot, "lineno")[:12]
            print("live actors, top allocations:", *top, sep="\n  ", file=sys.stderr)
        passivation_s = await passivate(registry, clock, args.idle_timeout)
        purge_cancelled_timers()
        gc.collect()
        left_bytes = tracemalloc.get_traced_memory()[0] - base
        if base_snapshot is not None:
            top = tracemalloc.take_snapshot().compare_to(base_snapshot, "lineno")[:8]
            print("after passivation, top allocations:", *top, sep="\n  ", file=sys.stderr)
        # A second, smaller cycle: what the first left behind is high-water capacity (dict and
        # set tables sized for the peak), so activating and passivating more users must not
        # add to it.
        again = max(1, users // 10)
        await drive(
            registry,
            sink,
            jobs("mem2", again, range(1)),
            concurrency=args.concurrency,
            latencies=None,
            deadline_s=300,
        )
        await passivate(registry, clock, args.idle_timeout)
        purge_cancelled_timers()
        gc.collect()
        second_bytes = tracemalloc.get_traced_memory()[0] - base - left_bytes
        tracemalloc.stop()
    return {
        "memory_users": users,
        "live_actors": live_actors,
        "bytes_per_live_actor": round(live_bytes / users),
        "bytes_after_passivation": round(left_bytes / users, 1),
        "bytes_after_second_cycle": round(second_bytes / again, 1),
        "bytes_pinned_by_cancelled_timers": round((raw_bytes - live_bytes) / users),
        "cancelled_timers_pending": stale_timers,
        "passivation_s": round(passivation_s, 3),
        "memory_phase_activation_s": round(elapsed, 3),
    }


def purge_cancelled_timers() -> int:
    """Drop the cancelled timers from the loop's heap, as `BaseEventLoop._run_once` does once
    they are over half of it; return how many there were."""
    loop = asyncio.get_running_loop()
    heap: list[asyncio.TimerHandle] | None = getattr(loop, "_scheduled", None)
    if heap is None:  # not the pure-Python event loop: nothing to look at
        return 0
    kept = [h for h in heap if not h.cancelled()]
    dropped = [h for h in heap if h.cancelled()]
    for handle in dropped:
        handle._scheduled = False  # type: ignore[attr-defined]
    heapq.heapify(kept)
    heap[:] = kept
    loop._timer_cancelled_count = 0  # type: ignore[attr-defined]
    return len(dropped)


async def passivate(registry: Registry, clock: SteppedClock, idle_timeout_s: float) -> float:
    """Make every actor idle past its timeout and wait (with a deadline) until all retired."""
    emptied = registry._idle  # the registry sets it when its last actor leaves
    clock.advance(idle_timeout_s + 1.0)
    started = time.perf_counter()
    with anyio.fail_after(idle_timeout_s + 30.0):
        await emptied.wait()
    return time.perf_counter() - started


def dump_tasks() -> None:
    """On SIGUSR1: print every asyncio task's stack to stderr (to see where a run waits)."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    users, per_user, concurrency = args.users, args.messages_per_user, args.concurrency
    messages = users * per_user
    result: dict[str, Any] = {
        "users": users,
        "messages": messages,
        "concurrency": concurrency,
        "tracing": args.tracing,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "gc_threshold": list(gc.get_threshold()),
        "token_budget": args.token_budget,
    }
    result["queue_floor_msgs_per_s"] = round(await queue_floor(messages, concurrency))

    with tempfile.TemporaryDirectory(prefix="butler-engine-bench-") as tmp:
        store = await SqliteStore.open(Path(tmp) / "bench.db")
        try:
            sink = FutureSink()
            observer = ServiceTimes(ButlerMetrics(CollectorRegistry()))
            deps = make_deps(store, sink, observer, args.tracing, args.token_budget)
            async with Registry(deps) as registry:
                # Throughput: every user's first message (activation and first contact),
                # then the following rounds on warm actors.
                latencies: list[float] = []
                observer.samples = []
                profiler = cProfile.Profile() if args.profile == "cprofile" else None
                sampler = Sampler() if args.profile == "sample" else None
                if profiler is not None:
                    profiler.enable()
                if sampler is not None:
                    sampler.start()
                pauses = GcPauses()
                cpu, loop_cpu = time.process_time(), time.thread_time()
                first = await drive(
                    registry,
                    sink,
                    jobs("user", users, range(1)),
                    concurrency=concurrency,
                    latencies=latencies,
                    deadline_s=600,
                )
                warm = await drive(
                    registry,
                    sink,
                    jobs("user", users, range(1, per_user)),
                    concurrency=concurrency,
                    latencies=latencies,
                    deadline_s=600,
                )
                cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
                pauses.stop()
                if sampler is not None:
                    sampler.stop()
                    print(sampler.report(), file=sys.stderr)
                if profiler is not None:
                    profiler.disable()
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("tottime").print_stats(30)
                    stats.sort_stats("cumulative").print_stats(40)
                    print(out.getvalue(), file=sys.stderr)
                service = observer.samples
                elapsed = first + warm
                result["msgs_per_s"] = round(messages / elapsed)
                result["first_contact_msgs_per_s"] = round(users / first)
                if per_user > 1:
                    result["warm_msgs_per_s"] = round((messages - users) / warm)
                result["p50_ms"], result["p99_ms"] = cuts_ms(latencies)
                result["service_p50_ms"], result["service_p99_ms"] = cuts_ms(service)
                result["elapsed_s"] = round(elapsed, 3)
                # CPU per message: the whole process (loop + SQLite thread) and the event loop's
                # thread alone. On a shared machine these are steadier than the rates, and
                # 1e6 / loop_cpu_us_per_msg is what the loop could sustain on a core of its own.
                result["cpu_us_per_msg"] = round(cpu / messages * 1e6, 1)
                result["loop_cpu_us_per_msg"] = round(loop_cpu / messages * 1e6, 1)
                result["loop_busy"] = round(loop_cpu / elapsed, 3)
                # Cyclic GC stops the loop; full collections grow with the live actors.
                result["gc_full_collections"] = pauses.full
                result["gc_pause_max_ms"] = round(pauses.longest * 1000, 1)
                result["gc_pause_total_ms"] = round(pauses.total * 1000, 1)
                result["writes_per_commit"] = round(
                    (messages * 2) / max(store._db.write_batches, 1), 1
                )

                # Unloaded: one message at a time on warm actors.
                unloaded = min(users, args.unloaded)
                latencies, observer.samples = [], []
                await drive(
                    registry,
                    sink,
                    jobs("user", unloaded, range(per_user, per_user + 1)),
                    concurrency=1,
                    latencies=latencies,
                    deadline_s=120,
                )
                result["unloaded_messages"] = unloaded
                result["unloaded_p50_ms"], result["unloaded_p99_ms"] = cuts_ms(latencies)
                service = observer.samples
                result["unloaded_service_p50_ms"], result["unloaded_service_p99_ms"] = cuts_ms(
                    service
                )
                observer.samples = None
            result.update(await measure_memory(deps, sink, args))
            # Transitions: the shared machine alone, then with a real actor's callback (a span
            # event and a metric). Each text message fires two (hear_text, replied).
            bare = fire_cost_us(deps, _Record())
            full = fire_cost_us(deps, UserActor("bench-fire", deps))
            result["lifecycle_fire_us"] = round(bare, 2)
            result["lifecycle_fire_actor_us"] = round(full, 2)
            result["lifecycle_share_of_loop_cpu"] = round(
                2 * full / result["loop_cpu_us_per_msg"], 3
            )
        finally:
            async with asyncio.timeout(60):
                await store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Butler engine benchmark (one JSON line).")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages-per-user", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="messages in flight")
    parser.add_argument("--tracing", choices=("sdk", "off"), default="sdk")
    parser.add_argument("--memory-users", type=int, default=10_000)
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=2.0,
        help="actor idle timeout of the memory phase, seconds",
    )
    parser.add_argument(
        "--unloaded",
        type=int,
        default=1_000,
        help="messages sent one at a time for the unloaded service time",
    )
    parser.add_argument(
        "--profile",
        choices=("sample", "cprofile"),
        help="profile the throughput phase (report on stderr): a sampling profiler of the "
        "event loop's thread, or cProfile",
    )
    parser.add_argument(
        "--memory-detail",
        action="store_true",
        help="print the top allocations of the memory phase to stderr",
    )
    parser.add_argument("--trace-frames", type=int, default=1, help="tracemalloc frames")
    parser.add_argument(
        "--gc-threshold",
        help="gc.set_threshold values, e.g. 700,10,10 (default: what `butler` sets, "
        "adapters.bootstrap.wiring.GC_THRESHOLDS)",
    )
    parser.add_argument(
        "--deadline", type=float, default=900.0, help="seconds before the whole run is aborted"
    )
    parser.add_argument(
        "--token-budget",
        type=int,
        default=0,
        help="BUTLER_TOKEN_BUDGET_DAILY of every user (0: none, as by default); a budget no "
        "run reaches measures the usage read each turn then makes",
    )
    args = parser.parse_args()
    if args.users < 1 or args.messages_per_user < 1 or args.concurrency < 1:
        parser.error("users, messages per user and concurrency must be positive")
    # The run stops by itself: each phase has a deadline, and should anything still hang
    # (a store thread that died, say), this dumps every thread's stack and exits.
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    if args.gc_threshold:
        gc.set_threshold(*(int(part) for part in args.gc_threshold.split(",")))
    else:
        tune_gc()
    result = asyncio.run(run(args))
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
