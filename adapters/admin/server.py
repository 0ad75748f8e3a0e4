"""The admin HTTP server: the application, its token, the public routes and the listener.
The routes' handlers are in `reads`, `commands` and `events`.

`async with serve_admin(backend, config) as url:` serves on `BUTLER_ADMIN_ADDR`. Every route but
`/metrics`, `/healthz`, `/readyz` and the static page needs `Authorization: Bearer
$BUTLER_ADMIN_TOKEN`; without a token it listens on loopback only. Commands (reset, profile
updates, compression) go through the actor's mailbox, so live state stays coherent.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.admin import commands, events, reads
from adapters.admin.backend import (
    APP,
    PARTITIONS,
    STREAMS,
    TRACE_URL,
    AdminBackend,
    PartitionsSource,
)
from adapters.admin.client import ADMIN_HEADER
from engine.errors import ConfigurationError, StoreUnavailable

__all__ = ["AdminBackend", "AdminConfig", "PartitionsSource", "build_app", "serve_admin"]

log = logging.getLogger(__name__)

PUBLIC = frozenset({"/metrics", "/healthz", "/readyz", "/admin/", "/admin"})
"""Routes open without the token. The page is static (no data); it asks for the token."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Where the admin server listens and the bearer token it asks for (empty: none)."""

    addr: tuple[str, int] = ("127.0.0.1", 8377)
    token: str = field(default="", repr=False)
    trace_url: str = ""  # `BUTLER_TRACE_URL`: the trace viewer, `{trace_id}` filled in


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_exposure(config: AdminConfig) -> None:
    """Refuse a non-loopback admin address without a token.

    Raises:
        ConfigurationError: `BUTLER_ADMIN_ADDR` is not loopback and `BUTLER_ADMIN_TOKEN` is
            empty.
    """
    host, _ = config.addr
    if not config.token and not is_loopback(host):
        raise ConfigurationError(
            f"BUTLER_ADMIN_ADDR {host} is not a loopback address: set BUTLER_ADMIN_TOKEN"
        )


def _auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in PUBLIC:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(
                    text='{"error": "unauthorized"}',
                    content_type="application/json",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return middleware


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, so a client can tell Butler's admin API from another server's JSON."""
    response.headers[ADMIN_HEADER] = "1"


def build_app(
    app: AdminBackend, config: AdminConfig, *, partitions: PartitionsSource | None = None
) -> web.Application:
    """The aiohttp application (without a listener), for `serve_admin` and tests.
    `partitions`: where a worker on a broker reads its partitions (None: no broker)."""
    web_app = web.Application(middlewares=[_auth(config.token)])  # type: ignore[list-item]
    web_app[APP] = app
    web_app[PARTITIONS] = partitions
    web_app[STREAMS] = set()
    web_app[TRACE_URL] = config.trace_url
    web_app.on_response_prepare.append(_stamp)
    r = web_app.router
    r.add_get("/healthz", _healthz)
    r.add_get("/readyz", _readyz)
    r.add_get("/metrics", _metrics)
    r.add_get("/admin", _to_page)
    r.add_get("/admin/", _page)
    r.add_get("/admin/actors", reads.get_actors)
    r.add_get("/admin/actors/{user_id}", reads.get_actor)
    r.add_get("/admin/actors/{user_id}/events", events.actor_events)
    r.add_get("/admin/actors/{user_id}/history", reads.get_history)
    r.add_post("/admin/actors/{user_id}/reset", commands.post_reset)
    r.add_post("/admin/actors/{user_id}/compress", commands.post_compress)
    r.add_get("/admin/actors/{user_id}/usage", reads.get_usage)
    r.add_post("/admin/actors/{user_id}/usage/reset", commands.post_usage_reset)
    r.add_get("/admin/profiles", reads.get_profiles)
    r.add_patch("/admin/profiles/{user_id}", commands.patch_profile)
    r.add_get("/admin/machine", reads.get_machine)
    r.add_get("/admin/events", events.all_events)
    return web_app


@asynccontextmanager
async def serve_admin(
    app: AdminBackend, config: AdminConfig, *, partitions: PartitionsSource | None = None
) -> AsyncIterator[str]:
    """Serve the admin API on `config.addr`; yields its base URL.

    Port 0 picks a free port (tests). Open event streams are closed on exit.

    Raises:
        ConfigurationError: a non-loopback address without a token.
    """
    check_exposure(config)
    web_app = build_app(app, config, partitions=partitions)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    host, port = config.addr
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        url = f"http://{shown}:{bound[1]}"
        log.info("admin server on %s/admin/", url)
        yield url
    finally:
        streams: set[asyncio.Task[Any]] = web_app[STREAMS]
        for task in tuple(streams):
            task.cancel()
        await runner.cleanup()


# -- public routes -------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    app = request.app[APP]
    try:
        await app.store.check()  # a lost store answers reads from a file nobody will see again
        await app.store.list_profiles(limit=1)
    except StoreUnavailable as exc:
        return web.json_response({"status": "store unavailable", "reason": str(exc)}, status=503)
    return web.json_response({"status": "ready", "actors": len(app.registry)})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[APP].metrics)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _to_page(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/")


async def _page(request: web.Request) -> web.Response:
    page = resources.files("adapters") / "admin" / "page" / "index.html"
    return web.Response(
        text=page.read_text(encoding="utf-8"),
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'",
            "Cache-Control": "no-store",
        },
    )
