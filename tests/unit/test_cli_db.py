"""`butler db ...` in process on a real SQLite file: migrate, export, import, refusals."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_store
from adapters.bootstrap.wiring import store_name as _store_name
from adapters.entrypoints.db import db_command
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.errors import ConfigurationError, StoreUnavailable

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


async def test_an_export_into_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    target = tmp_path / "missing" / "dir" / "x.jsonl"
    assert await db_command(settings(tmp_path / "s.db"), "export", target, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"the folder {target.parent} does not exist" in err
    assert not target.parent.exists()


@pytest.mark.parametrize("where", ["file-in-the-way", "folder", "unwritable"])
async def test_a_store_path_that_cannot_hold_the_file_is_a_setting_error(
    tmp_path: Path, where: str
):
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    path = {
        "file-in-the-way": tmp_path / "afile" / "s.db",
        "folder": tmp_path / "adir",
        "unwritable": Path("/proc/butler-test.db"),  # not writable even for root
    }[where]
    expected = StoreUnavailable if where == "folder" else ConfigurationError
    with pytest.raises(expected) as raised:
        await open_store(settings(path))
    assert str(path) in str(raised.value)
    assert "BUTLER_STORE" in str(raised.value)
    assert "\n" not in str(raised.value)
