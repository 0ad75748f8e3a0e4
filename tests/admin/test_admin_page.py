"""The admin page in Debian's headless Chromium: sign in with the token, see an actor, watch it
change state live over the event stream; the machine diagram and a user's page, screenshots
checked for what they should show (`BUTLER_TEST_SCREENSHOTS=DIR` keeps them)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from playwright.async_api import Page, async_playwright, expect

from adapters.admin.server import serve_admin
from adapters.bootstrap import wiring
from adapters.bootstrap.service import admin_config
from tests.admin.conftest import TOKEN, Admin, admin_settings
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM
from tests.support.png import colours
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


TRACE_URL = "http://127.0.0.1:16686/trace/{trace_id}"


@pytest.fixture
async def traced_admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Admin]:
    """The admin fixture with spans recorded (a provider of its own, not the global one) and
    `BUTLER_TRACE_URL` set, so transitions carry trace ids and the page links them."""
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: provider.get_tracer("butler"))
    settings = admin_settings(tmp_path, trace_url=TRACE_URL)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with (
        wiring.open_app(settings, sink=sink, ports=wiring.Ports(store=store, llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        yield Admin(app, url, store, llm, sink, http)
    provider.shutdown()


Box = tuple[float, float, float, float]

_BOXES = """() => {
  const svg = document.getElementById("diagram");
  const box = e => {
    const b = e.getBoundingClientRect();
    return [b.left, b.top, b.right, b.bottom];
  };
  return { frame: box(svg), labels: [...svg.querySelectorAll("text.edge-label")].map(box),
    states: [...svg.querySelectorAll("g[data-state] rect")].map(box) };
}"""


def _apart(a: Box, b: Box) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _inside(a: Box, frame: Box) -> bool:
    return frame[0] <= a[0] and a[2] <= frame[2] and frame[1] <= a[1] and a[3] <= frame[3]


async def assert_legible(page: Page) -> None:
    """No edge label covers another, or a state, or runs out of the diagram."""
    found = await page.evaluate(_BOXES)
    frame: Box = tuple(found["frame"])
    labels: list[Box] = [tuple(b) for b in found["labels"]]
    states: list[Box] = [tuple(b) for b in found["states"]]
    assert len(labels) >= 10
    for i, label in enumerate(labels):
        assert _inside(label, frame), (label, frame)
        for other in labels[i + 1 :]:
            assert _apart(label, other), (label, other)
        for state in states:
            assert _apart(label, state), (label, state)


async def test_user_page_and_machine_diagram(traced_admin: Admin, tmp_path: Path) -> None:
    admin = traced_admin
    chromium = require("chromium")
    await admin.app.registry.tell_text("alice", "Добрый вечер, моя почта alice@example.org")
    await admin.sink.wait_for(1)
    await admin.app.registry.tell_text("alice", "Который час?")
    await admin.sink.wait_for(2)
    shots = Path(os.environ.get("BUTLER_TEST_SCREENSHOTS", tmp_path))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 1100})
            await page.goto(admin.url + "/admin/")
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            await expect(page.locator("#status")).to_have_text("live")
            # The diagram: directed edges labelled with triggers and how often each was taken.
            edge = page.locator('#diagram g[data-edge="idle>generating"] text')
            await expect(edge).to_contain_text("hear_text 2")
            await expect(
                page.locator('#diagram g[data-edge="generating>idle"] text')
            ).to_contain_text("replied 2")
            await expect(page.locator("#diagram marker#arrow")).to_have_count(1)
            idle_fill = await page.locator('#diagram g[data-state="idle"] rect').get_attribute(
                "fill"
            )
            empty_fill = await page.locator(
                '#diagram g[data-state="compressing"] rect'
            ).get_attribute("fill")
            assert idle_fill != empty_fill  # coloured by how many actors are in it
            await assert_legible(page)
            diagram = await page.locator("#diagram").screenshot(path=str(shots / "machine.png"))
            painted = colours(diagram)
            assert _rgb(idle_fill) in painted  # the busy state's colour is on screen
            assert len(painted) > 20  # text and lines, not a blank box

            # The user's page, from the actors table.
            await page.click('#actors tr[data-user="alice"] a')
            await expect(page.locator("#user-id")).to_have_text("alice")
            messages = page.locator("#conversation li")
            await expect(messages).to_have_count(4)
            await expect(messages.nth(0)).to_contain_text("Добрый вечер, моя почта [email]")
            await expect(messages.nth(1)).to_have_class("assistant")
            assert "alice@example.org" not in await page.content()
            await expect(page.locator("#profile")).to_contain_text("language")
            await expect(page.locator("#summary")).to_have_text("(no summary yet)")
            rows = page.locator("#timeline tbody tr")
            await expect(rows).to_have_count(4)
            await expect(rows.nth(0)).to_contain_text("idle → generating")
            await expect(rows.nth(0)).to_contain_text("hear_text")
            link = rows.nth(0).locator("a")
            href = await link.get_attribute("href")
            assert href is not None
            assert href.startswith("http://127.0.0.1:16686/trace/")
            assert href.removeprefix("http://127.0.0.1:16686/trace/") == await link.text_content()
            budget = page.locator("#budget tbody tr")
            await expect(budget).to_have_count(2)
            await expect(budget.nth(0)).to_contain_text("no limit")
            await expect(page.locator("#budget-note")).to_contain_text("personalization on")
            await expect(page.locator("#personalization")).to_have_text("personalization: on")
            user = await page.screenshot(path=str(shots / "user.png"), full_page=True)
            assert (238, 243, 255) in colours(user)  # the user's messages' bubbles
            assert "#/users/alice" in page.url
        finally:
            await browser.close()


def _rgb(css: str | None) -> tuple[int, int, int]:
    assert css is not None
    if css.startswith("#"):
        return int(css[1:3], 16), int(css[3:5], 16), int(css[5:7], 16)
    r, g, b = (int(v) for v in css.removeprefix("rgb(").removesuffix(")").split(","))
    return r, g, b


async def test_user_page_shows_a_spent_budget_and_the_kill_switch(tmp_path: Path) -> None:
    chromium = require("chromium")
    base = admin_settings(tmp_path)
    actors = dataclasses.replace(
        base.actors, personalization=False, token_budget_daily=20, cache_ttl_s=0.0
    )
    settings = dataclasses.replace(base, actors=actors)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    shots = Path(os.environ.get("BUTLER_TEST_SCREENSHOTS", tmp_path))
    async with (
        wiring.open_app(settings, sink=sink, ports=wiring.Ports(store=store, llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        async_playwright() as pw,
    ):
        for count, text in enumerate(("Good evening", "And the weather?"), start=1):
            await app.registry.tell_text("alice", text, language="en")  # 15 tokens: 30 of 20
            await sink.wait_for(count)
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 900})
            await page.goto(url + "/admin/#/users/alice")
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            badge = page.locator("#personalization")
            await expect(badge).to_have_text("personalization: off (plain model)")
            day = page.locator('#budget tr[data-period="day"]')
            await expect(day).to_have_class("level-exhausted")
            await expect(day.locator(".percent")).to_have_text("150%")
            await expect(page.locator("#budget-note")).to_contain_text("level: exhausted until")
            shot = await page.screenshot(path=str(shots / "user-budget.png"), full_page=True)
        finally:
            await browser.close()
    painted = colours(shot)
    assert (0xF8, 0xC8, 0xC8) in painted  # the spent period's row
    assert (0xB3, 0x26, 0x1E) in painted  # the kill switch's badge
