"""What the admin routes share: the engine they read and command, the keys of the aiohttp
application that hold it, and the JSON error answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from actors.registry import Registry
from engine.errors import OwnedElsewhere
from engine.ports import Store

KEEPALIVE_S = 15.0
COMMAND_TIMEOUT_S = 30.0


class AdminBackend(Protocol):
    """What the admin server reads and commands: the running engine."""

    @property
    def registry(self) -> Registry: ...

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> CollectorRegistry: ...


PartitionsSource = Callable[[], Awaitable[dict[str, Any]]]
"""The partitions of a worker on a broker, as /admin/actors shows them (`"partitions"`)."""

APP: web.AppKey[AdminBackend] = web.AppKey("butler", AdminBackend)
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
TRACE_URL: web.AppKey[str] = web.AppKey("trace_url", str)
PARTITIONS: web.AppKey[PartitionsSource | None] = web.AppKey("partitions")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def served_elsewhere(exc: OwnedElsewhere) -> web.Response:
    """409: another Butler process serves the user; change it through that one's admin API."""
    return web.json_response(
        {
            "error": f"another Butler process ({exc.owner}) serves this user",
            "owner": exc.owner,
            "until": exc.expires_at.isoformat(),
        },
        status=409,
    )


async def known(app: AdminBackend, user_id: str) -> bool:
    return app.registry.get(user_id) is not None or await app.store.get_profile(user_id) is not None
