"""SqliteStore under the per-message pattern: one load_turn (profile + last 20 events) and one
append of two events, at several concurrencies, on a real file. One JSON line per level;
`cpu_us_per_msg` (both threads) varies less than throughput on a shared machine.

Run: .venv/bin/python -m bench.store_bench [--messages 5000] [--users 1000] [--seed 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile

USER_TEXT = "Добрый вечер! Напомни мне завтра про встречу с бухгалтером в 10:00, пожалуйста 🙏"
REPLY_TEXT = (
    "Разумеется, сэр. Я напомню вам о встрече с бухгалтером завтра в 10:00. "
    "Позвольте заметить, что до неё у вас свободное утро: чай и газета будут готовы к восьми."
)


def pair(ids: EventIds, user_id: str) -> tuple[str, list[MemoryEvent]]:
    """A user message and the butler's reply to it, as one turn appends them."""
    now = datetime.now(UTC)
    asked, asked_at = ids.next(now)
    answered, answered_at = ids.next(now)
    return asked, [
        MemoryEvent(asked, user_id, "user", USER_TEXT, "text", asked_at, 30),
        MemoryEvent(
            answered, user_id, "assistant", REPLY_TEXT, "text", answered_at, 60, reply_to=asked
        ),
    ]


async def seed(store: SqliteStore, ids: EventIds, users: int, per_user: int) -> None:
    """Give every user a profile and `per_user` events, so reads return full pages."""
    for user in range(users):
        user_id = f"user-{user:05d}"
        events = [event for _ in range(per_user // 2) for event in pair(ids, user_id)[1]]
        await store.append(events, profile=UserProfile.new(user_id, datetime.now(UTC)))


async def one_message(store: SqliteStore, ids: EventIds, user_id: str) -> float:
    """Run one message's store work; return its latency in seconds."""
    started = time.perf_counter()
    asked, events = pair(ids, user_id)
    turn = await store.load_turn(user_id, limit=20, before=asked)
    first_contact = UserProfile.new(user_id, events[0].created_at) if turn.profile is None else None
    await store.append(events, profile=first_contact)
    return time.perf_counter() - started


async def worker(
    store: SqliteStore, ids: EventIds, jobs: Iterator[str], latencies: list[float]
) -> None:
    for user_id in jobs:
        latency = await one_message(store, ids, user_id)
        latencies.append(latency)


async def level(concurrency: int, *, messages: int, users: int, per_user: int) -> dict[str, object]:
    """Measure one concurrency on a fresh database file."""
    with tempfile.TemporaryDirectory(prefix="butler-bench-") as tmp:
        store = await SqliteStore.open(Path(tmp) / "bench.db")
        ids = EventIds()
        await seed(store, ids, users, per_user)
        batches_before = store._db.write_batches
        jobs = iter([f"user-{i % users:05d}" for i in range(messages)])
        latencies: list[float] = []
        cpu_started = time.process_time()
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(store, ids, jobs, latencies))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        batches = store._db.write_batches - batches_before
        await store.close()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "concurrency": concurrency,
        "messages": messages,
        "users": users,
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "msgs_per_s": round(messages / elapsed),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
        "writes_per_commit": round(messages / max(batches, 1), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=40, help="events per user before timing")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()
    for concurrency in args.concurrency:
        result = await level(
            concurrency, messages=args.messages, users=args.users, per_user=args.seed
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
