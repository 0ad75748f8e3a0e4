"""Backends of the `Store` contract suite: each param opens one real store in a fresh place.

A new backend joins by adding a class with `open` and `open_unreachable` and a param.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from adapters.storage.sqlite import SqliteStore
from engine.ports import Store


class Backend(Protocol):
    """Opens stores of one technology on one fresh database."""

    async def open(self) -> Store:
        """Open (or reopen, after a close) the same database."""
        ...

    async def open_unreachable(self) -> Store:
        """Try to open a store that cannot be reached; must raise StoreUnavailable."""
        ...


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


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": lambda tmp_path: SqliteBackend(tmp_path / "butler.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    make: Callable[[Path], Backend] = BACKENDS[request.param]
    return make(tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()
