"""`butler run` refusing to start, as a process: one clear line on stderr, no traceback, and
exit code 2 for a setting that cannot be used (1 for a service that refuses us)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.bot_api_server import BotApiStandIn
from tests.support.telegram_emulator import free_port
from tests.support.tools import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def api() -> AsyncIterator[BotApiStandIn]:
    async with BotApiStandIn(token="999:the-token-telegram-knows") as server:
        yield server


async def butler_run(tmp_path: Path, **settings: str) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "BUTLER_DATA_DIR": str(tmp_path / "data"),
        "BUTLER_LLM_URL": "http://127.0.0.1:9/v1",
        "BUTLER_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.entrypoints.cli",
        "run",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


async def test_an_exposed_admin_address_without_a_token(tmp_path: Path) -> None:
    rc, lines = await butler_run(tmp_path, BUTLER_ADMIN_ADDR=f"0.0.0.0:{free_port()}")
    assert rc == 2
    assert lines == [
        "butler: BUTLER_ADMIN_ADDR 0.0.0.0 is not a loopback address: set BUTLER_ADMIN_TOKEN"
    ]


async def test_a_data_directory_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "in-the-way").write_text("a file, not a directory")
    rc, lines = await butler_run(tmp_path, BUTLER_DATA_DIR=str(tmp_path / "in-the-way" / "data"))
    assert rc == 2
    assert len(lines) == 1
    assert lines[0].startswith("butler: the data directory ")
    assert "cannot be written (Not a directory)" in lines[0]


async def test_a_token_telegram_refuses(api: BotApiStandIn, tmp_path: Path) -> None:
    rc, lines = await butler_run(
        tmp_path,
        BUTLER_TELEGRAM_TOKEN="999:a-token-telegram-refuses",
        BUTLER_TELEGRAM_API_URL=api.url,
    )
    assert rc == 1
    assert lines == ["butler: Telegram refused BUTLER_TELEGRAM_TOKEN"]


async def test_a_bot_api_nobody_answers(tmp_path: Path) -> None:
    rc, lines = await butler_run(
        tmp_path,
        BUTLER_TELEGRAM_TOKEN="999:any-token",
        BUTLER_TELEGRAM_API_URL=f"http://127.0.0.1:{free_port()}",
    )
    assert rc == 1
    assert len(lines) == 1
    assert lines[0].startswith("butler: cannot reach the Bot API server: ")
