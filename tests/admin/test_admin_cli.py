"""`butler admin list|show|reset|update` through the admin API, and on the store without it."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from actors.ownership import StoreUserLeases
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_store
from adapters.entrypoints.admin import run_admin
from adapters.entrypoints.cli import _parser
from engine.domain import UserProfile
from tests.admin.conftest import TOKEN, Admin, admin_settings

pytestmark = pytest.mark.anyio


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["admin", *argv])


async def run(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_admin(settings, parse(*argv), out)
    return code, out.getvalue()


def online(admin: Admin, token: str = TOKEN) -> Settings:
    return dataclasses.replace(admin.app.settings, admin_url=admin.url, admin_token=token)


async def test_commands_go_through_the_running_service(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    await admin.app.registry.tell_text("alice", "Добрый вечер")
    await admin.sink.wait_for(1)
    settings = online(admin)
    code, out = await run(settings, "list")
    assert (code, out) == (0, "alice\tru\twitty\t0\tidle\n")
    code, out = await run(settings, "show", "alice", "--json")
    shown = json.loads(out)
    assert shown["live"] is True
    assert shown["history"][0]["trigger"] == "hear_text"
    code, out = await run(settings, "update", "alice", "--tone", "formal", "--topics", "tea, jazz")
    assert code == 0
    assert json.loads(out)["preferred_topics"] == ["tea", "jazz"]
    assert admin.store.profiles["alice"].tone == "formal"
    code, out = await run(settings, "reset", "alice")
    assert json.loads(out) == {"reset": True, "erased": False, "state": "idle"}
    code, out = await run(settings, "show", "alice")
    assert "formal" in out
    assert capsys.readouterr().err == ""  # nothing fell back to the store


async def test_a_wrong_token_is_an_error_not_a_fallback(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = await run(online(admin, token="wrong"), "list")
    assert code == 1
    assert "401" in capsys.readouterr().err


async def test_unknown_user_is_reported(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await run(online(admin), "reset", "ghost")
    assert code == 1
    assert "404" in capsys.readouterr().err


async def test_through_the_service_a_user_another_process_serves_is_exit_3(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    admin.store.profiles["fay"] = UserProfile.new("fay", datetime.now(UTC))
    other = StoreUserLeases(admin.store, SystemClock(), owner="elsewhere:4242:beef", ttl_s=60)
    await other.claim("fay")
    code, _ = await run(online(admin), "reset", "fay", "--erase")
    assert code == 3
    assert "another Butler process (elsewhere:4242:beef)" in capsys.readouterr().err
    assert "fay" in admin.store.profiles


async def test_invalid_update_is_refused_before_anything_is_sent(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = await run(online(admin), "update", "alice")
    assert code == 2
    assert "nothing to update" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_without_a_service_the_store_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dataclasses.replace(
        admin_settings(tmp_path), admin_url=f"http://127.0.0.1:{free_port()}"
    )
    store = await open_store(settings)
    now = datetime.now(UTC)
    await store.save_profile(UserProfile.new("bob", now))
    await store.save_profile(UserProfile.new("carol", now, "en"))
    await store.close()

    code, out = await run(settings, "list")
    assert (code, out) == (0, "bob\tru\twitty\t0\tpassive\ncarol\ten\twitty\t0\tpassive\n")
    assert "using the store directly" in capsys.readouterr().err
    code, out = await run(settings, "update", "bob", "--persona", "Jeeves", "--language", "en")
    assert json.loads(out)["persona"] == "Jeeves"
    code, out = await run(settings, "show", "bob", "--json")
    assert json.loads(out)["profile"]["language"] == "en"
    code, out = await run(settings, "reset", "carol", "--erase")
    assert json.loads(out)["erased"] is True
    code, _ = await run(settings, "show", "carol")
    assert code == 1
    code, _ = await run(settings, "reset", "carol")
    assert code == 1
    code, _ = await run(settings, "update", "carol", "--tone", "casual")
    assert code == 1


async def test_on_the_store_a_user_another_process_serves_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dataclasses.replace(
        admin_settings(tmp_path), admin_url=f"http://127.0.0.1:{free_port()}"
    )
    store = await open_store(settings)
    now = datetime.now(UTC)
    await store.save_profile(UserProfile.new("bob", now))
    # A `butler chat --user bob` elsewhere holds the user (a host name that is not this one).
    await store.acquire_lease("user:bob", "other-host:42:chat", ttl_s=600, now=now)
    await store.close()

    code, _ = await run(settings, "reset", "bob", "--erase")
    assert code == 3
    code, _ = await run(settings, "update", "bob", "--tone", "formal")
    assert code == 3
    err = capsys.readouterr().err
    assert "another Butler process (other-host:42:chat) serves user 'bob'" in err
    code, out = await run(settings, "show", "bob", "--json")  # reading needs no claim
    assert code == 0
    assert json.loads(out)["profile"]["tone"] == "witty"  # nothing was changed


@pytest.mark.parametrize("answer", ["html", "json404"])
async def test_a_server_that_is_not_butler_is_named_and_the_store_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], answer: str
) -> None:
    async def other(request: web.Request) -> web.Response:
        if answer == "html":
            return web.Response(
                text="<html><body>It works!</body></html>", content_type="text/html"
            )
        return web.json_response({"detail": "Not Found"}, status=404)

    other_app = web.Application()
    other_app.router.add_route("*", "/{tail:.*}", other)
    runner = web.AppRunner(other_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        settings = dataclasses.replace(admin_settings(tmp_path), admin_url=url)
        store = await open_store(settings)
        await store.save_profile(UserProfile.new("bob", datetime.now(UTC)))
        await store.close()
        code, out = await run(settings, "list")
    finally:
        await runner.cleanup()
    assert (code, out) == (0, "bob\tru\twitty\t0\tpassive\n")
    [said] = capsys.readouterr().err.splitlines()
    assert f"{url} answered" in said
    assert "not a Butler admin API" in said
    assert "BUTLER_ADMIN_URL" in said
    assert "using the store directly" in said
