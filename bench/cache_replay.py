"""The response cache's real hit rate on a replayed conversation set.

The set: `--users` conversations of `--turns` messages. First messages come from a short list
of greetings (most people open alike), later ones from a longer list of requests, drawn with a
fixed seed, so every run replays the same set. Each user's conversation runs through the real
engine (registry, actors, prompts, SQLite store with the cache in it) against an in-process
model. `--passes 2` replays the whole set a second time as new users (the same people
starting over, or a second cohort) to show what repeats buy.

    .venv/bin/python -m bench.cache_replay [--users 200] [--turns 6] [--passes 1]
        [--concurrency 10]

Every model answer is distinct (as a sampled model's are), so two histories stay alike only
while the cache itself serves them the same answers: an opener's cached answer makes the next
identical message hit too. Conversations running at the same moment miss together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from actors.deps import ActorDeps
from actors.registry import Accepted, Registry
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.wiring import Templates
from adapters.observability.metrics import ButlerMetrics
from adapters.storage.sqlite import SqliteStore
from engine.ports import Completion, CompletionRequest, OutgoingReply
from engine.prompt import PromptBuilder
from engine.tokens import CalibratedEstimator

GREETINGS = ["Привет", "Добрый вечер", "Здравствуйте", "Доброе утро", "Привет, Альфред", "/start"]
REQUESTS = [
    "Напомни купить молоко",
    "Какая завтра погода?",
    "Расскажи анекдот",
    "Что почитать вечером?",
    "Спасибо",
    "Составь список дел на завтра",
    "Как приготовить омлет?",
    "Посоветуй фильм",
    "Спасибо, Альфред",
    "Хорошо",
    "Который час?",
    "Придумай тост на день рождения",
    "Что посмотреть в Лондоне?",
    "Как дела?",
    "Спокойной ночи",
]


class Model:
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        # Every answer differs, as a sampled model's do (temperature 0.7): a history matches
        # another only up to its first reply.
        return Completion(f"Разумеется, сэр. (ответ {self.calls})", "bench", 0, 10, 5)

    async def probe(self) -> bool:
        return True


class Sink:
    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[OutgoingReply]] = {}

    async def deliver(self, reply: OutgoingReply) -> str:
        future = self.waiting.pop(reply.reply_to, None)
        if future is not None:
            future.set_result(reply)
        return "bench"


def conversations(users: int, turns: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(GREETINGS))]  # a few openers dominate
    return [
        [rng.choices(GREETINGS, weights)[0]] + [rng.choice(REQUESTS) for _ in range(turns - 1)]
        for _ in range(users)
    ]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "bench.sqlite3")
        templates = Templates.load()
        counter = CalibratedEstimator()
        metrics = CollectorRegistry()
        model, sink = Model(), Sink()
        deps = ActorDeps(
            store=store,
            llm=model,
            sink=sink,
            clock=SystemClock(),
            counter=counter,
            prompts=PromptBuilder(templates.persona, templates.memory_summary, counter),
            summarize=templates.summarize,
            observer=ButlerMetrics(metrics),
            tracer=trace.get_tracer("bench"),
        )
        sets = conversations(args.users, args.turns, args.seed)
        per_pass = []
        async with Registry(deps) as registry:

            async def talk(user: str, lines: list[str]) -> None:
                for text in lines:
                    ticket = await registry.tell_text(user, text)
                    assert isinstance(ticket, Accepted)
                    future = asyncio.get_running_loop().create_future()
                    sink.waiting[ticket.event_id] = future
                    await future

            for n in range(args.passes):
                before = model.calls
                queue = list(enumerate(sets))

                async def worker(n: int = n, queue: list[tuple[int, list[str]]] = queue) -> None:
                    while queue:
                        i, lines = queue.pop(0)
                        await talk(f"p{n}-u{i}", lines)

                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                asked = args.users * args.turns
                per_pass.append(round(1 - (model.calls - before) / asked, 4))
        await store.close()
    hits = metrics.get_sample_value("butler_llm_cache_hits_total", {"purpose": "reply"})
    misses = metrics.get_sample_value("butler_llm_cache_misses_total", {"purpose": "reply"})
    first = [lines[0] for lines in sets]
    print(
        json.dumps(
            {
                "users": args.users,
                "turns": args.turns,
                "passes": args.passes,
                "hits": hits,
                "misses": misses,
                "hit_rate": round((hits or 0) / ((hits or 0) + (misses or 0)), 4),
                "hit_rate_per_pass": per_pass,
                "distinct_first_messages": len(set(first)),
                "concurrency": args.concurrency,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--concurrency", type=int, default=10, help="conversations at once")
    asyncio.run(main(parser.parse_args()))
