"""One user's conversation through the admin API and `butler admin history`: PII masked,
transitions with durations and trace links, the machine's live transition counts."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.history import TransitionRecord
from adapters.admin.conversation import timeline_json, trace_link
from adapters.bootstrap.wiring import open_store
from adapters.entrypoints.admin import run_admin
from adapters.entrypoints.cli import _parser
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.lifecycle import Phase, Trigger
from tests.admin.conftest import TOKEN, Admin, admin_settings

pytestmark = pytest.mark.anyio

CARD = "4111 1111 1111 1111"


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_durations_are_the_time_in_each_state_and_trace_ids_become_links():
    clock = Clock()
    records = [
        TransitionRecord("alice", 90.0, Phase.IDLE, Phase.GENERATING, Trigger.HEAR_TEXT, 0xAB),
        TransitionRecord("alice", 92.5, Phase.GENERATING, Phase.IDLE, Trigger.REPLIED, 0xAB),
    ]
    rows = timeline_json(clock, records, "http://jaeger:16686/trace/{trace_id}")
    assert [r["duration_s"] for r in rows] == [2.5, 7.5]
    assert [r["ongoing"] for r in rows] == [False, True]
    assert rows[0]["trace_url"] == "http://jaeger:16686/trace/" + format(0xAB, "032x")
    assert timeline_json(clock, records, "")[0]["trace_url"] is None
    assert trace_link("http://x/{trace_id}", None) is None


async def test_history_masks_pii_and_counts_transitions(admin: Admin) -> None:
    await admin.app.registry.tell_text("alice", f"Моя карта {CARD}, запомни")
    await admin.sink.wait_for(1)
    status, data = await admin.get("/admin/actors/alice/history?limit=10")
    assert status == 200
    texts = [e["text"] for e in data["events"]]
    assert [e["role"] for e in data["events"]] == ["user", "assistant"]
    assert CARD not in json.dumps(data, ensure_ascii=False)
    assert "Моя карта" in texts[0]
    assert data["state"] == "idle"
    triggers = [t["trigger"] for t in data["transitions"]]
    assert triggers[0] == "hear_text"
    assert all(t["duration_s"] >= 0 for t in data["transitions"])
    status, machine = await admin.get("/admin/machine")
    taken = {(t["from"], t["to"], t["trigger"]): t["count"] for t in machine["transitions"]}
    assert taken[("idle", "generating", "hear_text")] == 1
    assert sum(taken.values()) == len(data["transitions"])
    status, _ = await admin.get("/admin/actors/nobody/history")
    assert status == 404


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_cli_shows_the_conversation_online_and_from_the_store(
    admin: Admin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await admin.app.registry.tell_text("alice", f"Карта {CARD}")
    await admin.sink.wait_for(1)
    online = dataclasses.replace(admin.app.settings, admin_url=admin.url, admin_token=TOKEN)
    out = io.StringIO()
    args = _parser().parse_args(["admin", "history", "alice", "--limit", "5"])
    assert await run_admin(online, args, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("alice: ru, witty, idle; 2 events stored")
    assert "  user    Карта" in lines[1]
    assert CARD not in out.getvalue()
    assert "idle -> generating (hear_text)" in out.getvalue()
    assert capsys.readouterr().err == ""

    offline = dataclasses.replace(
        admin_settings(tmp_path / "offline"), admin_url=f"http://127.0.0.1:{free_port()}"
    )
    store = await open_store(offline)
    event_id, now = EventIds().next(datetime.now(UTC))
    await store.append(
        [MemoryEvent(event_id, "bob", "user", f"pay with {CARD}", "text", now, 5)],
        profile=UserProfile.new("bob", now),
    )
    await store.close()
    out = io.StringIO()
    args = _parser().parse_args(["admin", "history", "bob", "--json"])
    assert await run_admin(offline, args, out) == 0
    data = json.loads(out.getvalue())
    assert data["transitions"] is None
    assert [e["text"] for e in data["events"]] == ["pay with [card]"]
    assert "using the store directly" in capsys.readouterr().err
