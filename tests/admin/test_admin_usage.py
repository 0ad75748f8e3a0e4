"""Token usage in the admin API and `butler admin usage`: show, reset, the kill switch's state;
through the running service and on the store without it."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from adapters.admin.server import serve_admin
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports, open_app, open_store
from adapters.entrypoints.admin import run_admin
from adapters.entrypoints.cli import _parser
from engine.domain import UserProfile
from tests.admin.conftest import TOKEN, Admin, admin_settings
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM

pytestmark = pytest.mark.anyio


@pytest.fixture
async def budgeted(tmp_path: Path) -> AsyncIterator[Admin]:
    """The admin fixture with a daily budget of 40 tokens (ScriptedLLM spends 15 a call)."""
    base = admin_settings(tmp_path)
    actors = dataclasses.replace(base.actors, token_budget_daily=40, cache_ttl_s=0.0)
    settings = dataclasses.replace(base, actors=actors)
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with (
        open_app(settings, sink=sink, ports=Ports(store=store, llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        yield Admin(app, url, store, llm, sink, http)


async def talk(admin: Admin, text: str) -> str:
    before = len(admin.sink.replies)
    await admin.app.registry.tell_text("alice", text, language="en")
    replies = await admin.sink.wait_for(before + 1)
    return replies[-1].kind


async def run(settings: Settings, *argv: str) -> tuple[int, str]:
    args: argparse.Namespace = _parser().parse_args(["admin", *argv])
    out = io.StringIO()
    code = await run_admin(settings, args, out)
    return code, out.getvalue()


async def test_usage_shows_tokens_limits_and_the_renewal_then_reset_restores_answers(
    budgeted: Admin,
) -> None:
    admin = budgeted
    assert [await talk(admin, f"question {i}") for i in range(4)] == [
        "reply",
        "reply",  # 30 of 40 after it: 75 %, below the brief prompt's 80 %
        "reply",  # 45 after it: spent
        "budget",
    ]
    status, data = await admin.get("/admin/actors/alice/usage")
    assert status == 200
    today = admin.app.clock.now()
    assert data["day"]["tokens"] == 45
    assert data["day"]["limit"] == 40
    assert data["day"]["percent"] == 112.5
    assert data["month"]["limit"] is None
    assert data["month"]["percent"] is None
    assert (data["level"], data["period"]) == ("exhausted", "day")
    renews = datetime.fromisoformat(data["renews_at"])
    assert renews.date() > today.date()
    assert (renews.hour, renews.minute, renews.utcoffset()) == (0, 0, UTC.utcoffset(None))
    assert data["personalization"] is True
    status, actors = await admin.get("/admin/actors")
    assert actors["personalization"] is True
    assert actors["actors"][0]["budget"] == "exhausted"

    status, done = await admin.send("POST", "/admin/actors/alice/usage/reset")
    assert status == 200
    assert done["reset"] is True
    assert (done["day"]["tokens"], done["level"]) == (0, "normal")
    assert await talk(admin, "and now?") == "reply"


async def test_usage_of_an_unknown_user_is_404_and_needs_the_token(budgeted: Admin) -> None:
    status, data = await budgeted.get("/admin/actors/ghost/usage")
    assert (status, data) == (404, {"error": "no such user"})
    status, _ = await budgeted.send("POST", "/admin/actors/ghost/usage/reset")
    assert status == 404
    await talk(budgeted, "hello")
    for method, path in (("GET", "/usage"), ("POST", "/usage/reset")):
        url = budgeted.url + "/admin/actors/alice" + path
        async with budgeted.http.request(method, url) as res:
            assert res.status == 401
    assert (await budgeted.store.usage("alice", now=budgeted.app.clock.now())).day == 15


async def test_the_cli_shows_and_resets_through_the_service(budgeted: Admin) -> None:
    for i in range(3):
        await talk(budgeted, f"question {i}")
    settings = dataclasses.replace(budgeted.app.settings, admin_url=budgeted.url, admin_token=TOKEN)
    code, out = await run(settings, "usage", "alice")
    assert code == 0
    assert "day: 45 tokens of 40 (112.5%)" in out
    assert "month: 45 tokens no limit" in out
    assert "level: exhausted until" in out
    assert "personalization: on" in out
    code, out = await run(settings, "usage", "alice", "--reset", "--json")
    data = json.loads(out)
    assert (code, data["reset"], data["day"]["tokens"]) == (0, True, 0)
    assert await talk(budgeted, "once more") == "reply"


async def test_the_kill_switch_shows_in_the_api(tmp_path: Path) -> None:
    base = admin_settings(tmp_path)
    settings = dataclasses.replace(
        base, actors=dataclasses.replace(base.actors, personalization=False)
    )
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with (
        open_app(settings, sink=sink, ports=Ports(store=store, llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        admin = Admin(app, url, store, llm, sink, http)
        await talk(admin, "hello")
        _, actors = await admin.get("/admin/actors")
        _, usage = await admin.get("/admin/actors/alice/usage")
        async with http.get(url + "/metrics") as res:
            metrics = await res.text()
    assert actors["personalization"] is False
    assert usage["personalization"] is False
    assert usage["level"] == "normal"
    assert usage["day"]["tokens"] == 15  # counted without a limit too
    assert "butler_personalization_enabled 0.0" in metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_without_a_service_the_cli_reads_and_resets_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = admin_settings(tmp_path, admin_url=f"http://127.0.0.1:{free_port()}")
    settings = dataclasses.replace(
        base, actors=dataclasses.replace(base.actors, token_budget_monthly=1000)
    )
    store = await open_store(settings)
    now = datetime.now(UTC)
    await store.save_profile(UserProfile.new("bob", now))
    await store.add_usage("bob", 850, now=now)
    await store.close()

    code, out = await run(settings, "usage", "bob", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["month"]["tokens"], data["month"]["percent"], data["level"]) == (
        850,
        85.0,
        "reduced",
    )
    assert "using the store directly" in capsys.readouterr().err
    code, out = await run(settings, "usage", "bob", "--reset")
    assert (code, out.splitlines()[0]) == (0, "bob: usage reset")
    store = await open_store(settings)
    try:
        assert (await store.usage("bob", now=now)).month == 0
    finally:
        await store.close()
    code, _ = await run(settings, "usage", "nobody")
    assert code == 1
