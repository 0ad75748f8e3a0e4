"""The admin HTTP API over a live registry: auth, views, commands through the mailbox, SSE."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors.ownership import StoreUserLeases
from adapters.admin.server import check_exposure, serve_admin
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports, open_app
from engine.domain import UserProfile
from engine.errors import ConfigurationError
from tests.admin.conftest import TOKEN, Admin, admin_settings
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM

pytestmark = pytest.mark.anyio


async def talk(admin: Admin, user: str, text: str = "") -> None:
    """A message from `user` (its own text by default: identical prompts hit the cache)."""
    before = len(admin.sink.replies)
    await admin.app.registry.tell_text(user, text or f"Добрый вечер, это {user}")
    await admin.sink.wait_for(before + 1)


async def test_every_admin_route_needs_the_token(admin: Admin) -> None:
    await talk(admin, "alice")
    for method, path in [
        ("GET", "/admin/actors"),
        ("GET", "/admin/actors/alice"),
        ("GET", "/admin/machine"),
        ("GET", "/admin/profiles"),
        ("GET", "/admin/events"),
        ("POST", "/admin/actors/alice/reset"),
        ("POST", "/admin/actors/alice/compress"),
        ("PATCH", "/admin/profiles/alice"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with admin.http.request(method, admin.url + path, headers=headers) as res:
                assert res.status == 401, (method, path, headers)
                assert res.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/metrics", "/admin/"):
        async with admin.http.get(admin.url + path) as res:
            assert res.status == 200, path


async def test_page_is_static_and_carries_no_data(admin: Admin) -> None:
    await talk(admin, "alice-page-secret")
    async with admin.http.get(admin.url + "/admin/") as res:
        body = await res.text()
    assert "alice-page-secret" not in body
    assert "<table" in body


def test_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    settings = admin_settings(tmp_path, admin_token="", admin_addr=("0.0.0.0", 8377))
    with pytest.raises(ConfigurationError, match="BUTLER_ADMIN_TOKEN"):
        check_exposure(admin_config(settings))
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(admin_config(dataclasses.replace(settings, admin_addr=(host, 1))))
    check_exposure(admin_config(dataclasses.replace(settings, admin_token="t")))
    with pytest.raises(ConfigurationError):
        check_exposure(
            admin_config(dataclasses.replace(settings, admin_addr=("butler.example", 1)))
        )


async def test_without_a_token_loopback_is_open(tmp_path: Path) -> None:
    settings = admin_settings(tmp_path, admin_token="")
    async with (
        open_app(
            settings, sink=CollectingSink(), ports=Ports(store=MemoryStore(), llm=ScriptedLLM())
        ) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/admin/actors") as res,
    ):
        assert res.status == 200
        assert (await res.json()) == {"actors": [], "personalization": True}


async def test_actors_list_and_filter(admin: Admin) -> None:
    await talk(admin, "alice")
    admin.llm.down = True
    await talk(admin, "bob")
    status, data = await admin.get("/admin/actors")
    assert status == 200
    by_user = {a["user_id"]: a for a in data["actors"]}
    assert by_user["alice"]["state"] == "idle"
    assert by_user["bob"]["state"] == "degraded"
    bob = by_user["bob"]
    assert bob["last_transition"]["trigger"] == "llm_unavailable"
    assert bob["mailbox_depth"] == 0
    assert bob["turn_age_s"] is None
    assert bob["transitions"] == 2
    assert bob["messages"] == 1
    _, data = await admin.get("/admin/actors?state=degraded")
    assert [a["user_id"] for a in data["actors"]] == ["bob"]


async def test_actor_detail_has_history_profile_and_summary_age(admin: Admin) -> None:
    await talk(admin, "alice")
    await talk(admin, "alice", "ещё раз")
    status, data = await admin.get("/admin/actors/alice")
    assert status == 200
    assert data["live"] is True
    assert data["state"] == "idle"
    assert [h["trigger"] for h in data["history"]] == ["hear_text", "replied"] * 2
    assert all(h["at"].startswith("20") for h in data["history"])
    assert data["profile"]["persona"] == "Alfred-style дворецкий"
    assert data["memory_events"] == 4
    assert data["summary_age_s"] is None
    status, _ = await admin.get("/admin/actors/nobody")
    assert status == 404


async def test_history_keeps_the_last_fifty(admin: Admin) -> None:
    for i in range(30):
        await talk(admin, "alice", f"m{i}")
    _, data = await admin.get("/admin/actors/alice")
    assert len(data["history"]) == 50
    assert data["transitions"] >= 60  # compression ran past 50 events, too
    history = data["history"]
    assert history[-1]["trigger"] == data["last_transition"]["trigger"]
    assert all(a["to"] == b["from"] for a, b in itertools.pairwise(history))
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)


async def test_reset_goes_through_the_mailbox_and_leaves_degraded(admin: Admin) -> None:
    admin.llm.down = True
    await talk(admin, "bob")
    admin.llm.down = False
    status, data = await admin.send("POST", "/admin/actors/bob/reset")
    assert (status, data) == (200, {"reset": True, "erased": False, "state": "idle"})
    _, detail = await admin.get("/admin/actors/bob")
    assert detail["history"][-1]["trigger"] == "reset"
    assert detail["memory_events"] == 2


async def test_reset_with_erase_deletes_profile_and_memory(admin: Admin) -> None:
    await talk(admin, "carol")
    status, data = await admin.send("POST", "/admin/actors/carol/reset", {"erase": True})
    assert status == 200
    assert data["erased"] is True
    assert "carol" not in admin.store.profiles
    assert not admin.store.events.get("carol")
    status, _ = await admin.send("POST", "/admin/actors/carol/reset", {"erase": "yes"})
    assert status == 400


async def test_erase_is_one_path_that_drops_what_waits(admin: Admin) -> None:
    # The admin's erase is /forget's (Registry.erase): waiting messages are not answered
    # afterwards, and nothing of the user is left, the cached answers included.
    await talk(admin, "dave")
    gate = asyncio.Event()
    admin.llm.gate = gate
    for text in ("в работе", "ждёт раз", "ждёт два"):
        await admin.app.registry.tell_text("dave", text)
    await admin.llm_calls(2)  # the first of the three is in hand, held at the model
    before = len(admin.sink.replies)
    erase = asyncio.create_task(admin.send("POST", "/admin/actors/dave/reset", {"erase": True}))
    actor = admin.app.registry.get("dave")
    assert actor is not None
    async with asyncio.timeout(5):  # the erase has stopped the actor, the turn still in hand
        while not actor.stopping:  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline
    gate.set()
    status, data = await erase
    assert (status, data) == (200, {"reset": True, "erased": True, "state": "passive"})
    assert len(admin.sink.replies) - before <= 1  # only the turn in hand was answered
    assert "dave" not in admin.store.profiles
    assert not admin.store.events.get("dave")
    assert not [k for k, (owner, _, _) in admin.store.cache.items() if owner == "dave"]


async def test_commands_for_unknown_users_are_404(admin: Admin) -> None:
    for method, path, body in [
        ("POST", "/admin/actors/ghost/reset", None),
        ("POST", "/admin/actors/ghost/compress", None),
        ("PATCH", "/admin/profiles/ghost", {"tone": "formal"}),
    ]:
        status, data = await admin.send(method, path, body)
        assert status == 404, path
        assert data == {"error": "no such user"}
    assert admin.app.registry.get("ghost") is None


async def test_commands_for_a_user_another_process_serves_are_409(admin: Admin) -> None:
    admin.store.profiles["fay"] = UserProfile.new("fay", datetime.now(UTC))
    other = StoreUserLeases(admin.store, SystemClock(), owner="elsewhere:4242:beef", ttl_s=60)
    await other.claim("fay")
    for method, path, body in [
        ("POST", "/admin/actors/fay/reset", None),
        ("POST", "/admin/actors/fay/reset", {"erase": True}),
        ("POST", "/admin/actors/fay/compress", None),
        ("PATCH", "/admin/profiles/fay", {"tone": "formal"}),
    ]:
        status, data = await admin.send(method, path, body)
        assert status == 409, (path, body, data)
        assert data["owner"] == "elsewhere:4242:beef"
        assert "another Butler process" in data["error"]
    assert "fay" in admin.store.profiles  # nothing erased, nothing changed
    assert admin.store.profiles["fay"].tone != "formal"
    assert admin.app.registry.get("fay") is None


async def test_profile_update_is_validated_and_applied(admin: Admin) -> None:
    await talk(admin, "alice")
    status, data = await admin.send(
        "PATCH",
        "/admin/profiles/alice",
        {"persona": "Jeeves", "tone": "formal", "language": "en", "topics": ["tea"]},
    )
    assert status == 200
    profile = data["profile"]
    assert (profile["persona"], profile["tone"], profile["language"]) == ("Jeeves", "formal", "en")
    assert profile["preferred_topics"] == ["tea"]
    assert admin.store.profiles["alice"].persona == "Jeeves"
    for bad in (
        {"tone": "rude"},
        {"language": "de"},
        {"persona": ""},
        {"topics": "tea"},
        {"topics": ["x" * 65]},
        {"mood": "happy"},
        {},
        {"tone": 3},
        ["tone"],
    ):
        status, data = await admin.send("PATCH", "/admin/profiles/alice", bad)
        assert status == 400, bad
        assert data["error"]
    async with admin.http.patch(
        admin.url + "/admin/profiles/alice", data=b"{not json", headers=admin.auth()
    ) as res:
        assert res.status == 400
    assert admin.store.profiles["alice"].persona == "Jeeves"  # nothing half-applied


async def test_profile_update_activates_a_passive_user(admin: Admin) -> None:
    admin.store.profiles["dora"] = UserProfile.new("dora", datetime.now(UTC))
    assert admin.app.registry.get("dora") is None
    status, _ = await admin.send("PATCH", "/admin/profiles/dora", {"tone": "casual"})
    assert status == 200
    assert admin.store.profiles["dora"].tone == "casual"


async def test_compress_is_accepted_and_runs_in_the_actor(admin: Admin, tmp_path: Path) -> None:
    for i in range(3):
        await talk(admin, "erin", f"m{i}")
    status, data = await admin.send("POST", "/admin/actors/erin/compress")
    assert (status, data) == (202, {"accepted": True})


async def test_compress_answers_503_when_the_mailbox_is_full(tmp_path: Path) -> None:
    settings = admin_settings(tmp_path)
    settings = dataclasses.replace(
        settings, actors=dataclasses.replace(settings.actors, mailbox_capacity=1)
    )
    gate = asyncio.Event()
    llm = ScriptedLLM(gate=gate)
    sink = CollectingSink()
    async with (
        open_app(settings, sink=sink, ports=Ports(store=MemoryStore(), llm=llm)) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        with app.registry.feed.subscribe("frank") as started:
            await app.registry.tell_text("frank", "one")  # in flight, waiting on the gate
            record = await started.next(5)
            assert record is not None
            assert record.trigger == "hear_text"
        await app.registry.tell_text("frank", "two")  # fills the mailbox
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(url + "/admin/actors/frank/compress", headers=headers) as res:
            assert res.status == 503
            assert await res.json() == {"error": "mailbox full"}
        gate.set()
        await sink.wait_for(2)


async def test_machine_counts_live_actors_per_state(admin: Admin) -> None:
    await talk(admin, "alice")
    admin.llm.down = True
    await talk(admin, "bob")
    status, data = await admin.get("/admin/machine")
    assert status == 200
    counts = {s["state"]: s["count"] for s in data["states"]}
    assert counts == {
        "idle": 1,
        "transcribing": 0,
        "generating": 0,
        "compressing": 0,
        "degraded": 1,
    }
    # Both users heard a text (and bob's model call failed): counts since start, per edge.
    taken = {(t["from"], t["to"], t["trigger"]): t for t in data["transitions"]}
    assert taken[("idle", "generating", "hear_text")] == {
        "from": "idle",
        "to": "generating",
        "trigger": "hear_text",
        "guard": "",
        "count": 2,
    }
    assert taken[("generating", "degraded", "llm_unavailable")]["count"] == 1
    assert data["mermaid"].startswith("stateDiagram-v2")


async def read_events(res: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    event = ""
    async with asyncio.timeout(5):
        while len(events) < count:
            line = (await res.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "transition":
                events.append(json.loads(line[6:]))
    return events


async def test_actor_events_stream_live_transitions(admin: Admin) -> None:
    await talk(admin, "alice")
    async with admin.http.get(
        admin.url + "/admin/actors/alice/events", headers=admin.auth()
    ) as res:
        assert res.headers["Content-Type"] == "text/event-stream"
        assert await res.content.readline() == b": connected\n"
        await talk(admin, "bob")  # another user's transitions are not in this stream
        await talk(admin, "alice")
        events = await read_events(res, 2)
    assert [(e["user_id"], e["from"], e["to"], e["trigger"]) for e in events] == [
        ("alice", "idle", "generating", "hear_text"),
        ("alice", "generating", "idle", "replied"),
    ]


async def test_all_events_stream_every_user(admin: Admin) -> None:
    async with admin.http.get(admin.url + "/admin/events", headers=admin.auth()) as res:
        await res.content.readline()
        await talk(admin, "alice")
        await talk(admin, "bob")
        events = await read_events(res, 4)
    assert [e["user_id"] for e in events] == ["alice", "alice", "bob", "bob"]
    assert admin.app.registry.feed.dropped_total == 0


async def test_metrics_are_served_without_user_ids(admin: Admin) -> None:
    await talk(admin, "alice-metrics")
    async with admin.http.get(admin.url + "/metrics") as res:
        body = await res.text()
    assert "personalized_requests_total" in body
    assert 'butler_actors{state="idle"} 1.0' in body
    assert "alice-metrics" not in body


async def test_readyz_reports_a_dead_store(admin: Admin) -> None:
    admin.store.down = True
    async with admin.http.get(admin.url + "/readyz") as res:
        assert res.status == 503
    status, _ = await admin.get("/admin/actors/alice")
    assert status == 503
    admin.store.down = False


async def test_default_settings_bind_loopback_8377(tmp_path: Path) -> None:
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    assert settings.admin_addr == ("127.0.0.1", 8377)
    assert settings.admin_url == "http://127.0.0.1:8377"
