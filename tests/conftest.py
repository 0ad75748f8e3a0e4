"""Shared fixtures: the async backend for anyio's pytest plugin, a MongoDB-protocol server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.secantus import SecantusServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    """One `secantusd-py` for the session; tests keep apart by using fresh database names."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
