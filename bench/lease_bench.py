"""What ownership costs: a turn's reply append through the store as is and through a fenced
view (the lease checked in the same transaction), in the same run, on a SQLite file and on
MongoDB (`secantusd-py` started here, or `--mongodb-uri`); and one renewal round of N leases
(`StoreUserLeases.renew`, what every live actor's claim costs every third of the TTL).
Prints one JSON line per store and measure: medians of `--repeat` runs, and the ratio.

Run: .venv/bin/python -m bench.lease_bench [--store sqlite|mongo|both] [--appends 2000]
     [--users 200] [--concurrency 20] [--leases 1000] [--repeat 5] [--mongodb-uri URI]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from actors.ownership import StoreUserLeases
from adapters.bootstrap.clock import SystemClock
from bench.store_bench import open_store, pair
from engine.domain import EventIds
from engine.ports import Lease, Store
from tests.support.secantus import SecantusServer


async def appends(
    store: Store, views: dict[str, Store], ids: EventIds, count: int, concurrency: int
) -> float:
    """Seconds to append `count` turns (a message and its reply), `concurrency` at a time,
    each user's through `views[user]`."""
    users = list(views)
    jobs = iter(range(count))

    async def work() -> None:
        for n in jobs:
            user_id = users[n % len(users)]
            await views[user_id].append(pair(ids, user_id)[1])

    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(store: Store, args: argparse.Namespace) -> list[dict[str, object]]:
    ids, now = EventIds(), datetime.now(UTC)
    users = [f"user-{i:04d}" for i in range(args.users)]
    leases: dict[str, Lease] = {}
    for user_id in users:
        leases[user_id] = await store.acquire_lease(f"user:{user_id}", "bench", ttl_s=600, now=now)
    plain = dict.fromkeys(users, store)
    fenced = {user_id: store.fenced(lease) for user_id, lease in leases.items()}
    runs: dict[str, list[float]] = {"plain": [], "fenced": []}
    for _ in range(args.repeat):  # alternated, so drift and caches hit both alike
        runs["plain"].append(await appends(store, plain, ids, args.appends, args.concurrency))
        runs["fenced"].append(await appends(store, fenced, ids, args.appends, args.concurrency))
    plain_s, fenced_s = statistics.median(runs["plain"]), statistics.median(runs["fenced"])

    ownership = StoreUserLeases(store, SystemClock(), owner="bench-renewer", ttl_s=15)
    held = [await ownership.claim(f"renewed-{i:05d}") for i in range(args.leases)]
    rounds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        held = [lease for lease in await ownership.renew(held) if lease is not None]
        rounds.append(time.perf_counter() - started)
    assert len(held) == args.leases
    return [
        {
            "measure": "append_turn",
            "appends": args.appends,
            "concurrency": args.concurrency,
            "plain_per_s": round(args.appends / plain_s),
            "fenced_per_s": round(args.appends / fenced_s),
            "fenced_over_plain_time": round(fenced_s / plain_s, 2),
        },
        {
            "measure": "renewal_round",
            "leases": args.leases,
            "median_ms": round(statistics.median(rounds) * 1000, 1),
            "us_per_lease": round(statistics.median(rounds) / args.leases * 1e6, 1),
        },
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "mongo", "both"), default="both")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mongodb-uri", default="")
    args = parser.parse_args()
    kinds = ("sqlite", "mongo") if args.store == "both" else (args.store,)
    print(json.dumps({"load_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))
    with tempfile.TemporaryDirectory(prefix="butler-bench-leases-") as tmp:
        server, uri = None, args.mongodb_uri
        if "mongo" in kinds and not uri:
            server = SecantusServer(Path(tmp) / "secantus")
            server.start()
            uri = server.uri("")
        try:
            for kind in kinds:
                folder = Path(tmp) / kind
                folder.mkdir()
                async with open_store(kind, folder, uri) as store:
                    for line in await measure(store, args):
                        print(json.dumps({"store": kind, **line}), flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
