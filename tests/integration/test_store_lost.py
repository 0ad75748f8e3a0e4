"""A store lost under the process: the SQLite file removed or replaced, the MongoDB database
dropped. `check` says so, and from then on nothing is accepted into it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.domain import UserProfile
from engine.errors import StoreUnavailable
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, tzinfo=UTC)


async def test_a_removed_data_directory_is_noticed_and_writes_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "butler.sqlite3"
    path.parent.mkdir()
    store = await SqliteStore.open(path)
    try:
        await store.check()  # the file opened is the file at the path
        await store.save_profile(UserProfile.new("u1", T0))
        shutil.rmtree(path.parent)
        with pytest.raises(StoreUnavailable, match="was removed under the service"):
            await store.check()
        with pytest.raises(StoreUnavailable, match="was removed"):
            await store.save_profile(UserProfile.new("u2", T0))
        with pytest.raises(StoreUnavailable, match="was removed"):
            await store.get_profile("u1")  # an answer from a file no restart will see
        path.parent.mkdir()  # an operator making the directory again does not bring it back
        with pytest.raises(StoreUnavailable):
            await store.check()
    finally:
        await store.close()
    assert not path.exists()  # nothing was written into a new file behind the operator's back


async def test_a_file_replaced_under_the_store_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "butler.sqlite3"
    async with await SqliteStore.open(path) as store:
        other = tmp_path / "other.sqlite3"
        sqlite3.connect(other).close()
        os.replace(other, path)
        with pytest.raises(StoreUnavailable, match="was replaced"):
            await store.check()


async def test_a_store_left_alone_passes_its_checks(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "butler.sqlite3") as store:
        for _ in range(3):
            await store.check()
        await store.save_profile(UserProfile.new("u1", T0))
        assert await store.get_profile("u1") is not None


async def test_a_dropped_mongodb_database_is_noticed(secantus: SecantusServer) -> None:
    name = f"lost_{uuid.uuid4().hex[:12]}"
    store = await MongoStore.open(secantus.uri(name))
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        secantus.uri(name), serverMonitoringMode="poll"
    )
    try:
        await store.check()
        await store.save_profile(UserProfile.new("u1", T0))
        await client.drop_database(name)
        with pytest.raises(StoreUnavailable, match="was dropped under the service"):
            await store.check()
        with pytest.raises(StoreUnavailable, match="dropped"):
            await store.save_profile(UserProfile.new("u2", T0))
        assert await client[name]["user_profiles"].count_documents({}) == 0
    finally:
        await client.close()
        await store.close()


async def test_a_database_made_again_by_another_start_is_still_not_ours(
    secantus: SecantusServer,
) -> None:
    uri = secantus.uri(f"again_{uuid.uuid4().hex[:12]}")
    first = await MongoStore.open(uri)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, serverMonitoringMode="poll")
    try:
        await client.drop_database(client.get_default_database().name)
        async with await MongoStore.open(uri) as second:  # a new database, a new incarnation
            await second.check()
            with pytest.raises(StoreUnavailable, match="dropped"):
                await first.check()
        async with await MongoStore.open(uri) as third:  # reopening keeps the incarnation
            await third.check()
    finally:
        await client.close()
        await first.close()
