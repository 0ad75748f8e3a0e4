"""Backends of the `Store` contract suite: each param opens one real store in a fresh place
(process memory, a SQLite file, a database on a MongoDB-protocol server).

A new backend joins by adding a class with `open` and `open_unreachable` and a param.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient

from adapters.storage.memory import MemoryData, MemoryStore
from adapters.storage.mongo import MongoStore
from adapters.storage.sqlite import SqliteStore
from engine.ports import Store
from tests.support.secantus import SecantusServer

REAL_MONGODB = os.environ.get("BUTLER_TEST_MONGODB_URI", "")
"""A real MongoDB to run the suite against as well (e.g. mongodb://127.0.0.1:27017/)."""


class Backend(Protocol):
    """Opens stores of one technology on one fresh database."""

    async def open(self) -> Store:
        """Open (or reopen, after a close) the same database."""
        ...

    async def open_unreachable(self) -> Store:
        """Try to open a store that cannot be reached; must raise StoreUnavailable."""
        ...


@dataclass(frozen=True)
class MemoryBackend:
    """Stores in this process on one `MemoryData`, which outlives a store's close."""

    data: MemoryData

    async def open(self) -> Store:
        return await MemoryStore.open(self.data)

    async def open_unreachable(self) -> Store:
        # Not collected for memory (see `remote_backend`): there is no server or file to lose.
        raise NotImplementedError("an in-process store cannot be unreachable")


@dataclass(frozen=True)
class SqliteBackend:
    path: Path

    async def open(self) -> Store:
        return await SqliteStore.open(self.path)

    async def open_unreachable(self) -> Store:
        # A directory that does not exist, below a regular file (so even root cannot create it).
        blocker = self.path.parent / "not-a-directory"
        blocker.write_text("")
        return await SqliteStore.open(blocker / "missing" / "butler.db")


@dataclass(frozen=True)
class MongoBackend:
    """A fresh database on a MongoDB-protocol server; `uri` names the server."""

    uri: str
    database: str

    @property
    def database_uri(self) -> str:
        """`uri` with its database (the path) replaced by this backend's own."""
        return urlunsplit(urlsplit(self.uri)._replace(path=f"/{self.database}"))

    async def open(self) -> Store:
        return await MongoStore.open(self.database_uri)

    async def open_unreachable(self) -> Store:
        with socket.socket() as probe:  # a port nothing listens on once the probe closes
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return await MongoStore.open(
            f"mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=300"
        )

    def drop(self) -> None:
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=5000, serverMonitoringMode="poll"
        )
        with client:
            client.drop_database(self.database)


def _fresh_database() -> str:
    return f"contract_{uuid.uuid4().hex[:12]}"


def _secantus(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server: SecantusServer = request.getfixturevalue("secantus")
    return MongoBackend(server.uri(""), _fresh_database())


def _real_mongodb(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return MongoBackend(REAL_MONGODB, _fresh_database())


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "memory": lambda request, tmp_path: MemoryBackend(MemoryData()),
    "sqlite": lambda request, tmp_path: SqliteBackend(tmp_path / "butler.db"),
    "mongodb-protocol": _secantus,
}
if REAL_MONGODB:
    BACKENDS["mongodb"] = _real_mongodb


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    make = BACKENDS[request.param]
    made = make(request, tmp_path)
    yield made
    if isinstance(made, MongoBackend):
        made.drop()


REMOTE = sorted(name for name in BACKENDS if name != "memory")
"""Backends with a server or a file that can be out of reach."""


@pytest.fixture(params=REMOTE)
def remote_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](request, tmp_path)
    yield made
    if isinstance(made, MongoBackend):
        made.drop()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()
