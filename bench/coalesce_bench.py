"""Model calls saved by coalescing, on a replayed burst workload.

A workload of Telegram-like bursts is generated once from a seed and replayed, in real time,
through the engine as `butler run` builds it (`open_app`: registry, actors, a real SQLite file
in a temporary folder) with an in-process model of fixed latency behind the LanguageModel
port, once per `BUTLER_COALESCE_MS` value, all in one run. Every message must be stored and
answered in every pass (checked against the store); the numbers are how many model calls
answered them and what the window costs in time to the reply.

The workload, per user: `--bursts` bursts a few seconds apart, each of one of three kinds:
- typed lines: 1-4 short lines, gaps drawn log-normally around `--typed-gap-ms` (people
  writing "Альфред," / "чай" / "в сад" as separate messages);
- forwarded: 3-12 messages a few milliseconds apart (Telegram delivers a forwarded batch as
  separate updates at once);
- single: one message.

Printed (one JSON line per window): model calls, calls per message, the cut against no
window, and p50/p99 milliseconds from a burst's last message to the reply that answers it.

    .venv/bin/python -m bench.coalesce_bench [--users 40] [--bursts 4] [--windows 0,400,800]
        [--model-ms 300] [--typed-gap-ms 1500] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports, open_app
from adapters.storage.sqlite import SqliteStore
from engine.ports import Completion, CompletionRequest, OutgoingReply


@dataclass(frozen=True, slots=True)
class Line:
    user: str
    at_s: float  # from the start of the replay
    text: str
    last_of_burst: bool


def workload(users: int, bursts: int, typed_gap_ms: float, seed: int) -> list[Line]:
    rng = random.Random(seed)
    lines: list[Line] = []
    for u in range(users):
        user = f"bench:{u}"
        at = rng.uniform(0, 3.0)
        for _ in range(bursts):
            kind = rng.choices(["typed", "forwarded", "single"], weights=[5, 2, 3])[0]
            if kind == "typed":
                count = rng.randint(1, 4)
                gaps = [rng.lognormvariate(0, 0.6) * typed_gap_ms / 1000 for _ in range(count)]
            elif kind == "forwarded":
                count = rng.randint(3, 12)
                gaps = [rng.uniform(0.002, 0.03) for _ in range(count)]
            else:
                count, gaps = 1, [0.0]
            for n in range(count):
                at += gaps[n] if n else 0.0
                lines.append(Line(user, at, f"{kind} {n} от {user}", n == count - 1))
            at += rng.uniform(6.0, 10.0)  # the answer is read, then the next burst
    return sorted(lines, key=lambda line: line.at_s)


class Model:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.purpose == "reply":
            self.calls += 1
        await asyncio.sleep(self.latency_s)  # noqa: TID251 - a model that takes its time
        return Completion("Будет исполнено, сэр.", "bench", 0, 10, 5)

    async def probe(self) -> bool:
        return True


class Sink:
    def __init__(self) -> None:
        self.at: dict[str, list[tuple[str, float]]] = {}  # user -> (reply_to, when), in order

    async def deliver(self, reply: OutgoingReply) -> str:
        self.at.setdefault(reply.user_id, []).append((reply.reply_to, time.monotonic()))
        return "bench"

    def answered(self, user: str, event_id: str) -> float | None:
        """When the reply answering `event_id` came: the first naming it or a later one."""
        return next((at for to, at in self.at.get(user, []) if to >= event_id), None)


async def replay(lines: list[Line], window_ms: int, model_ms: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_env(
            {
                "BUTLER_DATA_DIR": folder,
                "BUTLER_COALESCE_MS": str(window_ms),
                "BUTLER_LLM_CACHE_TTL_S": "0",
                "BUTLER_MEMORY_THRESHOLD": "100000",  # no compression calls in the count
            }
        )
        model, sink = Model(model_ms / 1000), Sink()
        sent: list[tuple[Line, str, float]] = []
        async with open_app(settings, sink=sink, ports=Ports(llm=model)) as app:
            start = time.monotonic()
            for line in lines:
                delay = start + line.at_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # noqa: TID251 - a replay keeps its timing
                ticket = await app.registry.tell_text(line.user, line.text)
                sent.append((line, getattr(ticket, "event_id", ""), time.monotonic()))
            users = {line.user for line in lines}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                owed = [await app.store.unanswered(u) for u in users]
                if not any(owed):
                    break
                await asyncio.sleep(0.05)  # noqa: TID251 - polls the store, with a deadline
            else:
                raise SystemExit(f"window {window_ms} ms: messages left unanswered")
        store = await SqliteStore.open(Path(folder) / "butler.sqlite3")
        try:
            stored = 0
            for user in users:
                turn = await store.load_turn(user, limit=100_000, before="\uffff")
                stored += sum(1 for e in turn.memory.events if e.role == "user")
        finally:
            await store.close()
    if stored != len(lines):
        raise SystemExit(f"window {window_ms} ms: {stored} of {len(lines)} messages stored")
    waits = []
    for line, event_id, told in sent:
        reply = sink.answered(line.user, event_id) if line.last_of_burst else None
        if reply is not None:
            waits.append((reply - told) * 1000)
    waits.sort()
    return {
        "window_ms": window_ms,
        "messages": len(lines),
        "model_calls": model.calls,
        "calls_per_message": round(model.calls / len(lines), 3),
        "reply_after_last_line_p50_ms": round(statistics.median(waits), 1),
        "reply_after_last_line_p99_ms": round(waits[int(0.99 * (len(waits) - 1))], 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--windows", default="0,400,800")
    parser.add_argument("--model-ms", type=float, default=300.0)
    parser.add_argument("--typed-gap-ms", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    lines = workload(args.users, args.bursts, args.typed_gap_ms, args.seed)
    baseline = 0
    for window in (int(w) for w in args.windows.split(",")):
        result = await replay(lines, window, args.model_ms)
        baseline = baseline or int(result["model_calls"])
        result["cut_vs_first"] = round(1 - result["model_calls"] / baseline, 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
