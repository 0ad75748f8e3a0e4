"""Every `butler` command builds the real app through the one wiring function.

Each command runs in-process through `adapters.entrypoints.cli.main` (argument parsing,
settings from the environment, observability, the command module) on a real SQLite file;
a spy around `adapters.bootstrap.wiring.open_app` / `open_store` records what was built, so
a command that wired its own store or model would fail here.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import service, wiring, worker
from adapters.bootstrap.settings import Settings
from adapters.entrypoints import admin, chat, cli, db
from adapters.llm.openai_http import OpenAIChatModel
from adapters.storage.sqlite import SqliteStore
from adapters.stt.whisper import WhisperTranscriber
from engine.ports import Store


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Spy:
    """Wraps the wiring's `open_app` and `open_store`; keeps what they built."""

    def __init__(self) -> None:
        self.apps: list[wiring.App] = []
        self.stores: list[Store] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open_app, real_open_store = wiring.open_app, wiring.open_store

        @asynccontextmanager
        async def open_app(*args: Any, **kwargs: Any) -> AsyncIterator[wiring.App]:
            async with real_open_app(*args, **kwargs) as app:
                self.apps.append(app)
                yield app

        async def open_store(settings: Settings) -> Store:
            store = await real_open_store(settings)
            self.stores.append(store)
            return store

        for module in (wiring, service, *_entry_modules()):
            if hasattr(module, "open_app"):
                monkeypatch.setattr(module, "open_app", open_app)
            if hasattr(module, "open_store"):
                monkeypatch.setattr(module, "open_store", open_store)


def _entry_modules() -> list[Any]:
    return [worker, admin, chat, db]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith(("BUTLER_", "OTEL_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BUTLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BUTLER_LLM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("BUTLER_LLM_RETRIES", "0")
    monkeypatch.setenv("BUTLER_ADMIN_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("BUTLER_ADMIN_ADDR", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    return tmp_path


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    spy.install(monkeypatch)
    return spy


def assert_real(app: wiring.App, data: Path) -> None:
    assert isinstance(app.store, SqliteStore)
    assert app.settings.sqlite_path == data / "data" / "butler.sqlite3"
    assert isinstance(app.llm, OpenAIChatModel)
    assert isinstance(app.transcriber, WhisperTranscriber)


def test_chat_wires_the_real_app(env: Path, spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO("Добрый вечер\n"))
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["chat", "--user", "wired"]) == 0
    [app] = spy.apps
    assert_real(app, env)
    assert out.getvalue().strip()  # the degraded answer: no model listens
    assert (env / "data" / "butler.sqlite3").is_file()


def test_db_and_admin_open_the_configured_store(
    env: Path, spy: Spy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["db", "migrate"]) == 0
    assert cli.main(["db", "export", str(env / "dump.jsonl")]) == 0
    assert cli.main(["admin", "list"]) == 0  # no service answers: the store directly
    assert cli.main(["worker", "--once"]) == 0
    assert len(spy.stores) == 4
    assert all(isinstance(s, SqliteStore) for s in spy.stores)
    assert "no service answers" in capsys.readouterr().err


def test_run_without_a_token_serves_the_real_app(env: Path, spy: Spy) -> None:
    settings = Settings.from_env()
    seen: list[wiring.App] = []
    ready = threading.Event()

    async def serve_until_ready() -> None:
        stop = asyncio.Event()

        def on_ready(app: wiring.App) -> None:
            seen.append(app)
            ready.set()
            stop.set()

        await service.serve(settings, stop=stop, on_ready=on_ready, admin=True)

    asyncio.run(serve_until_ready())
    assert ready.is_set()
    assert spy.apps == seen
    assert_real(seen[0], env)
