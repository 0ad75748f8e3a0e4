"""A running engine over fakes with the admin server on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.admin.server import serve_admin
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports, open_app
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM

TOKEN = "s3cret-admin-token"


@dataclass
class Admin:
    app: App
    url: str
    store: MemoryStore
    llm: ScriptedLLM
    sink: CollectingSink
    http: aiohttp.ClientSession

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.url + path, headers=self.auth()) as res:
            return res.status, await res.json()

    async def llm_calls(self, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the model was asked `count` times."""
        async with asyncio.timeout(timeout):
            while len(self.llm.calls) < count:  # noqa: ASYNC110 - polls, with a deadline
                await asyncio.sleep(0.001)  # noqa: TID251 - polls, with a deadline

    async def send(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
        async with self.http.request(
            method, self.url + path, json=body, headers=self.auth()
        ) as res:
            return res.status, await res.json()


def admin_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    fields: dict[str, object] = {"admin_addr": ("127.0.0.1", 0), "admin_token": TOKEN}
    return dataclasses.replace(base, **{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    settings = admin_settings(tmp_path)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with (
        open_app(settings, sink=sink, ports=Ports(store=store, llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        yield Admin(app, url, store, llm, sink, http)
