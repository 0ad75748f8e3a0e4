"""Faults an operator meets, through `butler run` as a real process behind a Bot API stand-in
that keeps updates until an offset confirms them: a poison update, lone surrogates, the data
directory removed under the running service.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.bot_api_server import TOKEN, BotApiStandIn
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import free_port
from tests.support.tools import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ADMIN_TOKEN = "faults-admin-token"
POLL_S = 1


@dataclass
class Service:
    proc: asyncio.subprocess.Process
    admin: str
    log: bytearray

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.admin}{path}") as response:
            return response.status, await response.text()


def service_env(
    api: BotApiStandIn, llm: OpenAIServer, data: Path, admin_port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    return env | {
        "BUTLER_DATA_DIR": str(data),
        "BUTLER_LLM_URL": llm.base_url,
        "BUTLER_LLM_RETRIES": "0",
        "BUTLER_TELEGRAM_TOKEN": TOKEN,
        "BUTLER_TELEGRAM_API_URL": api.url,
        "BUTLER_TELEGRAM_POLL_TIMEOUT_S": str(POLL_S),
        "BUTLER_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "BUTLER_ADMIN_TOKEN": ADMIN_TOKEN,
        "PYTHONPATH": str(ROOT),
    }


@asynccontextmanager
async def butler_run(api: BotApiStandIn, llm: OpenAIServer, data: Path) -> AsyncIterator[Service]:
    """`butler run` as a process; yields once it polls the stand-in; SIGTERM at the end."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.entrypoints.cli",
        "run",
        cwd=ROOT,
        env=service_env(api, llm, data, port),
        stderr=asyncio.subprocess.PIPE,
    )
    log = bytearray()

    async def collect() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            log.extend(chunk)

    reader = asyncio.create_task(collect())
    try:
        await api.wait_until(lambda: len(api.offsets) > 0, 60)
        yield Service(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        await reader
        sys.stderr.write(log.decode(errors="replace"))


def poison(update_id: int, user: int) -> dict[str, object]:
    """An update aiogram cannot read (fields of the wrong type), as after a Bot API change."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": "not-a-number",
            "date": "yesterday",
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "P"},
            "text": "poison text must never reach a log",
        },
    }


def metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


async def test_a_poison_update_delays_nobody_and_is_confirmed(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
) -> None:
    async with butler_run(api, llm, tmp_path / "data") as service:
        # One batch: a poison update between two users' messages.
        await api.send_text(11, "first")
        await api.push(poison(api.next_id(), 12))
        await api.send_text(13, "after the poison")
        sent_at = time.monotonic()
        await api.wait_until(lambda: api.texts(11) and api.texts(13), 3 * POLL_S + 5)
        delay = max(d.at for d in api.sent) - sent_at
        # A later batch is not held up either.
        await api.send_text(14, "a later batch")
        await api.wait_until(lambda: bool(api.texts(14)), 3 * POLL_S + 5)
        await api.wait_until(lambda: not api.pending, 3 * POLL_S)
        _, body = await service.get("/metrics")
    assert api.texts(13)[0].endswith("You said: after the poison")
    assert delay < POLL_S + 3
    assert metric(body, 'butler_telegram_updates_total{kind="unknown",outcome="poisoned"}') == 1.0


async def test_a_lone_surrogate_is_replaced_and_answered(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
) -> None:
    async with butler_run(api, llm, tmp_path / "data"):
        await api.send_text(21, "broken \ud800 text")
        await api.wait_until(lambda: bool(api.texts(21)), 3 * POLL_S + 10)
        await api.wait_until(lambda: not api.pending, 3 * POLL_S)
    assert api.texts(21)[0].endswith("You said: broken \ufffd text")


async def test_removing_the_data_directory_fails_readiness_and_stops_intake(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with butler_run(api, llm, data) as service:
        await api.send_text(31, "before")
        await api.wait_until(lambda: bool(api.texts(31)), 10)
        assert (await service.get("/readyz"))[0] == 200
        shutil.rmtree(data)
        removed = time.monotonic()
        async with asyncio.timeout(10):
            while (await service.get("/readyz"))[0] != 503:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)  # noqa: TID251 - polling a process over HTTP
        noticed = time.monotonic() - removed
        body = (await service.get("/readyz"))[1]
        await api.send_text(32, "after the removal")
        # The user is told the store is down; the update stays unconfirmed for a retry.
        await api.wait_until(lambda: bool(api.texts(32)), 3 * POLL_S + 5)
        async with asyncio.timeout(10):  # the timer's check, at most one interval later
            while metric((await service.get("/metrics"))[1], "butler_store_healthy") != 0:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)  # noqa: TID251 - polling a process over HTTP
        await asyncio.sleep(3)  # noqa: TID251 - more timer checks, which must not log again
    assert noticed < 5
    assert "was removed under the service" in body
    assert "You said" not in api.texts(32)[0]
    assert [u["update_id"] for u in api.pending] == [2]  # never confirmed
    assert service.log.count(b"ERROR adapters.bootstrap.service store check failed") == 1
    # Nothing accepted was lost: the next start takes the unconfirmed update and answers it.
    async with butler_run(api, llm, data):
        await api.wait_until(lambda: any("You said" in t for t in api.texts(32)), 20)
        await api.wait_until(lambda: not api.pending, 3 * POLL_S + 5)
    assert api.texts(32)[-1].endswith("You said: after the removal")
