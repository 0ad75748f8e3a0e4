"""/admin/actors on a broker worker: its partitions and every live partition lease; absent
on a process without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from actors.partitions import PartitionOwner
from adapters.admin.server import serve_admin
from adapters.bootstrap.broker_worker import PartitionsView
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.wiring import Ports, open_app
from adapters.broker.memory import MemoryPartitionLog
from adapters.observability.metrics import BrokerMetrics
from tests.admin.conftest import TOKEN, Admin, admin_settings
from tests.admin.test_admin_page import CHROMIUM_FLAGS
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM
from tests.support.tools import require

pytestmark = pytest.mark.anyio


async def accept_all(payload: bytes) -> bool:
    return True


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[Admin, PartitionOwner]]:
    settings = admin_settings(tmp_path)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with open_app(settings, sink=sink, ports=Ports(store=store, llm=llm)) as app:
        # Another worker, alive, holds partition 3 (and so this one gets the other three).
        now = app.clock.now()
        await store.acquire_lease("worker:other", "other", ttl_s=60, now=now)
        await store.acquire_lease("partition:3", "other", ttl_s=60, now=now)
        owner = PartitionOwner(
            log=MemoryPartitionLog(4),
            leases=store,
            clock=app.clock,
            owner="this-worker",
            ttl_s=30,
            handler=accept_all,
            observer=BrokerMetrics(app.metrics, partitions=4),
        )
        view = PartitionsView(owner, store, app.clock)
        async with (
            owner,
            serve_admin(app, admin_config(settings), partitions=view) as url,
            aiohttp.ClientSession() as http,
        ):
            yield Admin(app, url, store, llm, sink, http), owner


async def test_a_worker_shows_its_partitions_and_every_lease(
    worker: tuple[Admin, PartitionOwner],
) -> None:
    admin, _ = worker
    status, body = await admin.get("/admin/actors")
    assert status == 200
    parts: dict[str, Any] = body["partitions"]
    assert parts["owner"] == "this-worker"
    assert parts["workers"] == 2
    assert parts["fair_share"] == 2
    assert len(parts["owned"]) == 2
    assert 3 not in parts["owned"]
    rows = parts["all"]
    assert [row["partition"] for row in rows] == sorted(row["partition"] for row in rows)
    assert {"partition": 3, "owner": "other"}.items() <= rows[-1].items()
    assert {row["partition"] for row in rows if row["owner"] == "this-worker"} == set(
        parts["owned"]
    )
    for row in rows:
        assert datetime.fromisoformat(row["expires_at"]).tzinfo is not None


async def test_the_metrics_show_the_partitions(worker: tuple[Admin, PartitionOwner]) -> None:
    admin, owner = worker
    async with admin.http.get(admin.url + "/metrics") as res:
        text = await res.text()
    assert "butler_broker_partitions 4.0" in text
    assert f"butler_broker_partitions_owned {float(len(owner.owned()))}" in text
    assert 'butler_broker_updates_total{outcome="handled"} 0.0' in text


async def test_without_a_broker_there_are_no_partitions(admin: Admin) -> None:
    status, body = await admin.get("/admin/actors")
    assert status == 200
    assert "partitions" not in body
    assert TOKEN  # the shared fixture's token authorised the call


@pytest.mark.slow
async def test_the_page_shows_the_partitions_with_this_workers_rows_highlighted(
    worker: tuple[Admin, PartitionOwner],
) -> None:
    chromium = require("chromium")
    admin, owner = worker
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(admin.url + "/admin/")
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            await expect(page.locator("#partitions-view")).to_be_visible()
            await expect(page.locator("#partitions tbody tr")).to_have_count(3)
            await expect(page.locator("#partitions tr.mine")).to_have_count(len(owner.owned()))
            other = page.locator('#partitions tr[data-partition="3"]')
            await expect(other).not_to_have_class("mine")
            await expect(other.locator("td").nth(1)).to_have_text("other")
        finally:
            await browser.close()


@pytest.mark.slow
async def test_the_page_hides_partitions_without_a_broker(admin: Admin) -> None:
    chromium = require("chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(admin.url + "/admin/")
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            await expect(page.locator("#status")).to_have_text("live")
            await expect(page.locator("#partitions-view")).to_be_hidden()
        finally:
            await browser.close()
