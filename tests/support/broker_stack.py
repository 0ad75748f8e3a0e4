"""Butler on NATS JetStream as an operator runs it, for the e2e tests and `bench/broker_bench.py`:
real `butler run` worker processes and a `butler front` process (or the single-process
`butler run` without a broker), a Bot API stand-in they poll and send through over HTTP, the
OpenAI stand-in as the model, one store every worker shares (a MongoDB-protocol server or a
SQLite file), and the 3-node cluster from `tests.support.nats_cluster`.

What the workers did is read back from the store (events per user, leases), never from their
logs; CPU is read from /proc per process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from engine.domain import MemoryEvent
from engine.ports import Store
from tests.support.bot_api_server import TOKEN, BotApiStandIn
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import free_port
from tests.support.tools import ROOT

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is [0]; utime [11], stime [12], cutime [13], cstime [14].
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


@dataclass
class Proc:
    """One Butler process of the stack."""

    name: str
    proc: asyncio.subprocess.Process
    admin: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def kill(self) -> None:
        """SIGKILL: no release of leases, no ack, no flush."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)


@dataclass
class Stack:
    folder: Path
    api: BotApiStandIn
    llm: OpenAIServer
    store_uri: str
    broker_urls: Sequence[str] = ()
    partitions: int = 16
    ttl_s: float = 3.0
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
        env |= {
            "BUTLER_DATA_DIR": str(self.folder / "data"),
            "BUTLER_STORE": self.store_uri,
            "BUTLER_LLM_URL": self.llm.base_url,
            "BUTLER_LLM_RETRIES": "0",
            "BUTLER_LLM_CACHE_TTL_S": "0",
            "BUTLER_TELEGRAM_TOKEN": TOKEN,
            "BUTLER_TELEGRAM_API_URL": self.api.url,
            "BUTLER_TELEGRAM_POLL_TIMEOUT_S": "1",
            "BUTLER_RATE_LIMIT_PER_MINUTE": "0",
            # One turn per message: replies are counted per message in the store.
            "BUTLER_COALESCE_MS": "0",
            "BUTLER_LEASE_TTL_S": str(self.ttl_s),
            "BUTLER_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }
        if self.broker_urls:
            env |= {
                "BUTLER_BROKER_URL": ",".join(self.broker_urls),
                "BUTLER_BROKER_PARTITIONS": str(self.partitions),
                "BUTLER_BROKER_REPLICAS": "3" if len(self.broker_urls) >= 3 else "1",
            }
        return env | self.extra_env | extra

    async def _spawn(self, name: str, command: str, **extra: str) -> Proc:
        port = free_port()
        log = self.folder / f"{name}.log"
        self.folder.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters.entrypoints.cli",
                command,
                cwd=ROOT,
                env=self.env(BUTLER_ADMIN_ADDR=f"127.0.0.1:{port}", **extra),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        started = Proc(name, proc, f"http://127.0.0.1:{port}", log)
        self.procs.append(started)
        await self.wait_ready(started)
        return started

    async def wait_ready(self, proc: Proc, within: float = 90.0) -> None:
        """Until the process answers `/healthz` (its admin or front server is up)."""
        async with asyncio.timeout(within), aiohttp.ClientSession() as http:
            while True:
                if not proc.alive:
                    raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-3000:]}")
                try:
                    async with http.get(proc.admin + "/healthz") as res:
                        if res.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)  # noqa: TID251 - polls a port, with a deadline

    async def worker(self, name: str) -> Proc:
        """`butler run`: a worker on the broker when `broker_urls`, else the one process."""
        return await self._spawn(name, "run")

    async def front(self, name: str = "front") -> Proc:
        return await self._spawn(name, "front")

    async def close(self) -> None:
        for proc in self.procs:
            if proc.alive:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.proc.wait()


async def conversation(store: Store, user_id: str) -> list[MemoryEvent]:
    return await store.events_before(user_id, keep_last=0)


@dataclass(frozen=True, slots=True)
class Effects:
    """What the store holds, per user: messages in order, and replies per message."""

    messages: dict[str, list[str]]
    """User id -> the texts of its stored messages, in conversation order."""
    replies: dict[str, int]
    """Message event id -> how many assistant events answer it."""

    @property
    def stored(self) -> int:
        return sum(len(texts) for texts in self.messages.values())

    @property
    def answered_once(self) -> bool:
        return bool(self.replies) and all(count == 1 for count in self.replies.values())


async def effects(store: Store, users: Sequence[str]) -> Effects:
    messages: dict[str, list[str]] = {}
    replies: dict[str, int] = {}
    for user_id in users:
        events = await conversation(store, user_id)
        messages[user_id] = [e.content for e in events if e.role == "user"]
        for event in events:
            if event.role == "user":
                replies.setdefault(event.id, 0)
        for event in events:
            if event.role == "assistant" and event.reply_to:
                replies[event.reply_to] = replies.get(event.reply_to, 0) + 1
    return Effects(messages, replies)


async def partition_owners(store: Store) -> dict[int, str]:
    """Partition -> the owner id of its live lease."""
    leases = await store.leases("partition:", now=datetime.now(UTC))
    return {int(lease.key.split(":", 1)[1]): lease.owner for lease in leases}


def owner_pid(owner: str) -> int:
    """The pid inside an owner id `<host>:<pid>:<random>`."""
    return int(owner.rsplit(":", 2)[1])


async def spread_over(store: Store, pids: set[int], partitions: int) -> bool:
    """Every partition owned, and each of the workers `pids` (and no other) owns some."""
    owners = await partition_owners(store)
    return len(owners) == partitions and {owner_pid(o) for o in owners.values()} == pids
