"""`butler db ...` in process on a real SQLite file: migrate, export, import, refusals."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import store_name as _store_name
from adapters.entrypoints.db import db_command
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def settings(store: Path | str) -> Settings:
    return Settings.from_env({"BUTLER_STORE": str(store), "BUTLER_DATA_DIR": "/nonexistent"})


async def test_export_then_import_into_a_fresh_store(tmp_path: Path):
    source = tmp_path / "source.db"
    async with await SqliteStore.open(source) as store:
        event_id, stamp = EventIds().next(T0)
        event = MemoryEvent(event_id, "u", "user", "чай?", "text", stamp, 2)
        await store.append([event], profile=UserProfile.new("u", stamp))
    out = io.StringIO()
    dump = tmp_path / "dump.jsonl"
    assert await db_command(settings(source), "export", dump, out=out) == 0
    target = tmp_path / "target.db"
    assert await db_command(settings(target), "migrate", None, out=out) == 0
    assert await db_command(settings(target), "import", dump, out=out) == 0
    assert out.getvalue().splitlines() == [
        "butler: exported 1 profiles and 1 events",
        f"butler: the store is migrated: {target}",
        "butler: imported 1 profiles and 1 events",
    ]
    async with await SqliteStore.open(target) as store:
        assert await store.unanswered("u") == [event]


async def test_a_missing_or_bad_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = settings(tmp_path / "target.db")
    assert await db_command(target, "import", tmp_path / "missing.jsonl", out=io.StringIO()) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n", encoding="utf-8")
    assert await db_command(target, "import", bad, out=io.StringIO()) == 2
    assert "line 1: not a butler-dump" in capsys.readouterr().err


def test_store_names_leave_credentials_out(tmp_path: Path):
    uri = "mongodb://butler:s3cret@db.example:27017/butler?replicaSet=rs0&authSource=admin"
    assert _store_name(settings(uri)) == "mongodb://db.example:27017/butler"
    assert _store_name(settings(tmp_path / "b.db")) == str(tmp_path / "b.db")
