"""The store under the per-message pattern: one load_turn (profile + last 20 events) and one
append of two events, at several concurrencies. SQLite on a real file, and MongoDB through
`MongoStore` on the MongoDB-protocol server `secantusd-py` (started here, data in a temp folder)
or on a real MongoDB (`--mongodb-uri`). One JSON line per store and level; `cpu_us_per_msg`
is Butler's process (both threads for SQLite), `server_cpu_us_per_msg` the database server's
when it runs here.

Run: .venv/bin/python -m bench.store_bench [--store sqlite|mongo|both] [--messages 5000]
     [--users 1000] [--seed 40] [--concurrency 1 10 100] [--mongodb-uri URI]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.ports import Store
from tests.support.secantus import SecantusServer

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


async def seed(store: Store, ids: EventIds, users: int, per_user: int) -> None:
    """Give every user a profile and `per_user` events, so reads return full pages."""
    for user in range(users):
        user_id = f"user-{user:05d}"
        events = [event for _ in range(per_user // 2) for event in pair(ids, user_id)[1]]
        await store.append(events, profile=UserProfile.new(user_id, datetime.now(UTC)))


async def one_message(store: Store, ids: EventIds, user_id: str) -> float:
    """Run one message's store work; return its latency in seconds."""
    started = time.perf_counter()
    asked, events = pair(ids, user_id)
    turn = await store.load_turn(user_id, limit=20, before=asked)
    first_contact = UserProfile.new(user_id, events[0].created_at) if turn.profile is None else None
    await store.append(events, profile=first_contact)
    return time.perf_counter() - started


async def worker(store: Store, ids: EventIds, jobs: Iterator[str], latencies: list[float]) -> None:
    for user_id in jobs:
        latency = await one_message(store, ids, user_id)
        latencies.append(latency)


@asynccontextmanager
async def open_store(kind: str, folder: Path, mongodb_uri: str) -> AsyncIterator[Store]:
    """A fresh store of `kind` in `folder` (or a fresh database on `mongodb_uri`)."""
    if kind == "sqlite":
        store: Store = await SqliteStore.open(folder / "bench.db")
    else:
        base, _, query = mongodb_uri.partition("?")
        store = await MongoStore.open(f"{base.rstrip('/')}/bench_{uuid.uuid4().hex[:8]}?{query}")
    try:
        yield store
    finally:
        await store.close()


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far, from /proc; 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def level(
    kind: str,
    concurrency: int,
    *,
    messages: int,
    users: int,
    per_user: int,
    mongodb_uri: str = "",
    server_pid: int | None = None,
) -> dict[str, object]:
    """Measure one store at one concurrency on a fresh database."""
    with tempfile.TemporaryDirectory(prefix="butler-bench-") as tmp:
        async with open_store(kind, Path(tmp), mongodb_uri) as store:
            ids = EventIds()
            await seed(store, ids, users, per_user)
            batches = store._db.write_batches if isinstance(store, SqliteStore) else 0
            jobs = iter([f"user-{i % users:05d}" for i in range(messages)])
            latencies: list[float] = []
            cpu_started, server_started = time.process_time(), server_cpu_s(server_pid)
            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker(store, ids, jobs, latencies))
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            server_cpu = server_cpu_s(server_pid) - server_started
            if isinstance(store, SqliteStore):
                batches = store._db.write_batches - batches
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    result: dict[str, object] = {
        "store": kind,
        "concurrency": concurrency,
        "messages": messages,
        "users": users,
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "msgs_per_s": round(messages / elapsed),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
    }
    if kind == "sqlite":
        result["writes_per_commit"] = round(messages / max(batches, 1), 1)
    elif server_pid is not None:
        result["server_cpu_us_per_msg"] = round(server_cpu / messages * 1e6, 1)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "mongo", "both"], default="both")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=40, help="events per user before timing")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--mongodb-uri", default="", help="a real MongoDB instead of secantusd")
    args = parser.parse_args()
    kinds = ["sqlite", "mongo"] if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory(prefix="butler-bench-mongo-") as tmp:
        server = None
        uri = args.mongodb_uri
        if "mongo" in kinds and not uri:
            server = SecantusServer(Path(tmp))
            server.start()
            uri = server.uri("")
        try:
            for concurrency in args.concurrency:
                for kind in kinds:
                    pid = server.proc.pid if server is not None and server.proc else None
                    result = await level(
                        kind,
                        concurrency,
                        messages=args.messages,
                        users=args.users,
                        per_user=args.seed,
                        mongodb_uri=uri,
                        server_pid=pid if kind == "mongo" else None,
                    )
                    print(json.dumps(result), flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
