"""Fixtures of the end-to-end suites."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.test_chat_cli import ROOT, LLMServer
from tests.support.bot_api_server import BotApiStandIn
from tests.support.openai_server import OpenAIServer


@pytest.fixture
async def api() -> AsyncIterator[BotApiStandIn]:
    """A Bot API stand-in that keeps updates until an offset confirms them."""
    async with BotApiStandIn() as server:
        yield server


@pytest.fixture
async def llm() -> AsyncIterator[OpenAIServer]:
    """An OpenAI-style model server in this process (its mode set by the test)."""
    async with OpenAIServer() as server:
        yield server


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[:1] == ["READY"], ready
        yield LLMServer(int(ready[1]), int(ready[2]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
