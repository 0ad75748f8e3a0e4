"""The admin page in Debian's headless Chromium: sign in with the token, see an actor, watch it
change state live over the event stream."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import async_playwright, expect

from tests.admin.conftest import TOKEN, Admin
from tests.support.tools import require

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_page_shows_actors_and_follows_transitions_live(admin: Admin) -> None:
    chromium = require("chromium")
    gate = asyncio.Event()
    await admin.app.registry.tell_text("alice", "Добрый вечер")
    await admin.sink.wait_for(1)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(admin.url + "/admin/")
            # No token yet: the page asks for it and shows no data.
            await expect(page.locator("#login")).to_be_visible()
            await expect(page.locator("#actors tbody tr")).to_have_count(0)
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            row = page.locator('#actors tr[data-user="alice"]')
            await expect(row.locator(".state")).to_have_text("idle")
            await expect(page.locator("#status")).to_have_text("live")
            await expect(page.locator('#diagram g[data-state="idle"] text')).to_have_text("idle: 1")

            # A turn in flight: the row and the diagram follow the transition at once
            # (the table's own refresh is every 10 s, beyond these 5 s deadlines).
            admin.llm.gate = gate
            await admin.app.registry.tell_text("alice", "Ещё вопрос")
            await expect(row.locator(".state")).to_have_text("generating", timeout=5000)
            await expect(row.locator(".last")).to_have_text(
                "idle → generating (hear_text)", timeout=5000
            )
            await expect(page.locator('#diagram g[data-state="generating"] text')).to_have_text(
                "generating: 1", timeout=5000
            )
            gate.set()
            await admin.sink.wait_for(2)
            await expect(row.locator(".state")).to_have_text("idle", timeout=5000)

            # A new user appears without a reload.
            await admin.app.registry.tell_text("bob", "Привет")
            await admin.sink.wait_for(3)
            await expect(page.locator('#actors tr[data-user="bob"] .state')).to_have_text(
                "idle", timeout=5000
            )
            # The token lives in this tab's sessionStorage only, never in the URL.
            assert TOKEN not in page.url
            stored = await page.evaluate("sessionStorage.getItem('butler-admin-token')")
            assert stored == TOKEN
        finally:
            await browser.close()
