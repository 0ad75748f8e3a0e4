"""The admin HTTP server: actors, profiles, the state machine, live transitions, `/metrics`.

`async with serve_admin(backend, config) as url:` serves on `BUTLER_ADMIN_ADDR`. Every route but
`/metrics`, `/healthz`, `/readyz` and the static page needs `Authorization: Bearer
$BUTLER_ADMIN_TOKEN`; without a token it listens on loopback only. Commands (reset, profile
updates, compression) go through the actor's mailbox, so live state stays coherent.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from actors.history import SubscriptionDropped
from actors.registry import Registry, Rejected
from adapters.admin.client import ADMIN_HEADER
from adapters.admin.conversation import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    conversation,
    history_json,
    timeline_json,
)
from adapters.admin.views import (
    actor_json,
    machine_json,
    profile_json,
    transition_counts,
    transition_json,
    usage_json,
)
from engine.domain import InvalidProfileError
from engine.errors import ButlerError, ConfigurationError, OwnedElsewhere, StoreUnavailable
from engine.messages import Command, CompressMemory, ResetActor, UpdateProfile
from engine.ports import Store

log = logging.getLogger(__name__)

PUBLIC = frozenset({"/metrics", "/healthz", "/readyz", "/admin/", "/admin"})
"""Routes open without the token. The page is static (no data); it asks for the token."""

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


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Where the admin server listens and the bearer token it asks for (empty: none)."""

    addr: tuple[str, int] = ("127.0.0.1", 8377)
    token: str = field(default="", repr=False)
    trace_url: str = ""  # `BUTLER_TRACE_URL`: the trace viewer, `{trace_id}` filled in


_APP: web.AppKey[AdminBackend] = web.AppKey("butler", AdminBackend)
_STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")
_TRACE_URL: web.AppKey[str] = web.AppKey("trace_url", str)
_PARTITIONS: web.AppKey[PartitionsSource | None] = web.AppKey("partitions")

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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _served_elsewhere(exc: OwnedElsewhere) -> web.Response:
    """409: another Butler process serves the user; change it through that one's admin API."""
    return web.json_response(
        {
            "error": f"another Butler process ({exc.owner}) serves this user",
            "owner": exc.owner,
            "until": exc.expires_at.isoformat(),
        },
        status=409,
    )


def build_app(
    app: AdminBackend, config: AdminConfig, *, partitions: PartitionsSource | None = None
) -> web.Application:
    """The aiohttp application (without a listener), for `serve_admin` and tests.
    `partitions`: where a worker on a broker reads its partitions (None: no broker)."""
    web_app = web.Application(middlewares=[_auth(config.token)])  # type: ignore[list-item]
    web_app[_APP] = app
    web_app[_PARTITIONS] = partitions
    web_app[_STREAMS] = set()
    web_app[_TRACE_URL] = config.trace_url
    web_app.on_response_prepare.append(_stamp)
    r = web_app.router
    r.add_get("/healthz", _healthz)
    r.add_get("/readyz", _readyz)
    r.add_get("/metrics", _metrics)
    r.add_get("/admin", _to_page)
    r.add_get("/admin/", _page)
    r.add_get("/admin/actors", _actors)
    r.add_get("/admin/actors/{user_id}", _actor)
    r.add_get("/admin/actors/{user_id}/events", _actor_events)
    r.add_get("/admin/actors/{user_id}/history", _history)
    r.add_post("/admin/actors/{user_id}/reset", _reset)
    r.add_post("/admin/actors/{user_id}/compress", _compress)
    r.add_get("/admin/actors/{user_id}/usage", _usage)
    r.add_post("/admin/actors/{user_id}/usage/reset", _usage_reset)
    r.add_get("/admin/profiles", _profiles)
    r.add_patch("/admin/profiles/{user_id}", _update_profile)
    r.add_get("/admin/machine", _machine)
    r.add_get("/admin/events", _all_events)
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
        streams: set[asyncio.Task[Any]] = web_app[_STREAMS]
        for task in tuple(streams):
            task.cancel()
        await runner.cleanup()


# -- public routes -------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    app = request.app[_APP]
    try:
        await app.store.check()  # a lost store answers reads from a file nobody will see again
        await app.store.list_profiles(limit=1)
    except StoreUnavailable as exc:
        return web.json_response({"status": "store unavailable", "reason": str(exc)}, status=503)
    return web.json_response({"status": "ready", "actors": len(app.registry)})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_APP].metrics)
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


# -- views ---------------------------------------------------------------------------------


async def _actors(request: web.Request) -> web.Response:
    app = request.app[_APP]
    state = request.query.get("state", "")
    views = [v for v in app.registry.views() if not state or v.state == state]
    views.sort(key=lambda v: v.user_id)
    clock = app.registry.clock
    body: dict[str, Any] = {
        "actors": [actor_json(clock, v) for v in views],
        "personalization": app.registry.settings.personalization,
    }
    source = request.app[_PARTITIONS]
    if source is not None:  # a worker on a broker; absent otherwise
        body["partitions"] = await source()
    return web.json_response(body)


async def _actor(request: web.Request) -> web.Response:
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    registry, clock = app.registry, app.registry.clock
    try:
        profile = await app.store.get_profile(user_id)
        context = await app.store.load_turn(user_id, limit=0, before="\uffff")
    except StoreUnavailable:
        return _error(503, "store unavailable")
    actor = registry.get(user_id)
    if actor is None and profile is None:
        return _error(404, "no such user")
    data: dict[str, Any] = {"user_id": user_id, "live": actor is not None, "state": "passive"}
    if actor is not None:
        view = next((v for v in registry.views() if v.user_id == user_id), None)
        if view is not None:
            data.update(actor_json(clock, view))
        data["history"] = [transition_json(clock, r) for r in actor.history]
    data["memory_events"] = context.memory.total_events
    data["profile"] = None if profile is None else profile_json(profile)
    summary_at = profile.summary_updated_at if profile else None
    data["summary_age_s"] = (
        None if summary_at is None else round((clock.now() - summary_at).total_seconds(), 3)
    )
    return web.json_response(data)


async def _usage(request: web.Request) -> web.Response:
    """The user's token usage, the budgets, the level and when it renews."""
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    registry = app.registry
    now = registry.clock.now()
    try:
        if not await _known(app, user_id):
            return _error(404, "no such user")
        usage = await app.store.usage(user_id, now=now)
    except StoreUnavailable:
        return _error(503, "store unavailable")
    return web.json_response(usage_json(user_id, usage, registry.settings, now))


async def _usage_reset(request: web.Request) -> web.Response:
    """Forget the user's token counts: the budget starts afresh on the next message."""
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    registry = app.registry
    try:
        if not await _known(app, user_id):
            return _error(404, "no such user")
        await app.store.reset_usage(user_id)
        now = registry.clock.now()
        usage = await app.store.usage(user_id, now=now)
    except StoreUnavailable:
        return _error(503, "store unavailable")
    return web.json_response({"reset": True, **usage_json(user_id, usage, registry.settings, now)})


async def _profiles(request: web.Request) -> web.Response:
    app = request.app[_APP]
    try:
        limit = min(max(int(request.query.get("limit", "500")), 1), 1000)
    except ValueError:
        return _error(400, "limit must be an integer")
    try:
        page = await app.store.list_profiles(limit=limit, after=request.query.get("after", ""))
    except StoreUnavailable:
        return _error(503, "store unavailable")
    live = {v.user_id: v.state for v in app.registry.views()}
    return web.json_response(
        {
            "profiles": [
                {**profile_json(p), "state": live.get(p.user_id, "passive")} for p in page
            ],
            "next_after": page[-1].user_id if len(page) == limit else None,
        }
    )


async def _machine(request: web.Request) -> web.Response:
    app = request.app[_APP]
    return web.json_response(machine_json(app.registry, transition_counts(app.metrics)))


async def _history(request: web.Request) -> web.Response:
    """One user's conversation (PII masked), summary and transitions with trace links."""
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    try:
        limit = min(max(int(request.query.get("limit", str(DEFAULT_LIMIT))), 0), MAX_LIMIT)
    except ValueError:
        return _error(400, "limit must be an integer")
    try:
        profile, events, total = await conversation(app.store, user_id, limit=limit)
    except StoreUnavailable:
        return _error(503, "store unavailable")
    actor = app.registry.get(user_id)
    if actor is None and profile is None and not events:
        return _error(404, "no such user")
    records = list(actor.history) if actor is not None else []
    timeline = timeline_json(app.registry.clock, records, request.app[_TRACE_URL])
    data = history_json(user_id, profile, events, total, timeline)
    data["state"] = actor.state if actor is not None else "passive"
    data["trace_url"] = request.app[_TRACE_URL] or None
    return web.json_response(data)


# -- commands through the mailbox ----------------------------------------------------------


async def _known(app: AdminBackend, user_id: str) -> bool:
    return app.registry.get(user_id) is not None or await app.store.get_profile(user_id) is not None


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


async def _command(  # noqa: PLR0911 - one return per HTTP outcome reads best
    app: AdminBackend, user_id: str, command: Command, *, wait: bool
) -> web.Response | None:
    """Queue `command`; None when it was handled (or only queued, without `wait`)."""
    try:
        if not await _known(app, user_id):
            return _error(404, "no such user")
        if not wait:
            ticket = await app.registry.tell(user_id, command)
            return _error(503, "mailbox full") if isinstance(ticket, Rejected) else None
        ticket, done = await app.registry.ask(user_id, command)
        if isinstance(ticket, Rejected):
            return _error(503, "mailbox full")
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            failure = await done
    except TimeoutError:
        return _error(504, "the actor did not handle the command in time")
    except OwnedElsewhere as exc:
        return _served_elsewhere(exc)
    except ButlerError as exc:  # store down, shutting down
        return _error(503, type(exc).__name__)
    if failure is not None:
        return _error(500, type(failure).__name__)
    return None


async def _erase(app: AdminBackend, user_id: str) -> web.Response:
    """The one erase path, as /forget: the actor stops, then every record goes."""
    try:
        if not await _known(app, user_id):
            return _error(404, "no such user")
        await app.registry.erase(user_id)
    except OwnedElsewhere as exc:
        return _served_elsewhere(exc)
    except ButlerError as exc:  # store down, shutting down
        return _error(503, type(exc).__name__)
    return web.json_response({"reset": True, "erased": True, "state": "passive"})


async def _reset(request: web.Request) -> web.Response:
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    body = await _json_body(request)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        return _error(400, "erase must be true or false")
    if erase:
        return await _erase(app, user_id)
    failed = await _command(app, user_id, ResetActor(), wait=True)
    if failed is not None:
        return failed
    actor = app.registry.get(user_id)
    return web.json_response(
        {"reset": True, "erased": erase, "state": actor.state if actor else "passive"}
    )


async def _compress(request: web.Request) -> web.Response:
    app = request.app[_APP]
    failed = await _command(
        app,
        request.match_info["user_id"],
        CompressMemory(eager=request.query.get("eager") == "1"),
        wait=False,
    )
    return failed or web.json_response({"accepted": True}, status=202)


_PROFILE_FIELDS = frozenset({"persona", "tone", "language", "topics"})


async def _update_profile(request: web.Request) -> web.Response:
    app = request.app[_APP]
    user_id = request.match_info["user_id"]
    body = await _json_body(request)
    unknown = set(body) - _PROFILE_FIELDS
    if unknown:
        return _error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    topics = body.get("topics")
    if topics is not None and not (
        isinstance(topics, list) and all(isinstance(t, str) for t in topics)
    ):
        return _error(400, "topics must be a list of strings")
    for key in ("persona", "tone", "language"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return _error(400, f"{key} must be a string")
    try:
        update = UpdateProfile(
            persona=body.get("persona"),
            tone=body.get("tone"),
            language=body.get("language"),
            topics=None if topics is None else tuple(topics),
        )
    except InvalidProfileError as exc:
        return _error(400, str(exc))
    failed = await _command(app, user_id, update, wait=True)
    if failed is not None:
        return failed
    profile = await app.store.get_profile(user_id)
    return web.json_response({"profile": None if profile is None else profile_json(profile)})


# -- live transitions (server-sent events) -------------------------------------------------


async def _all_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, None)


async def _actor_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.match_info["user_id"])


async def _stream(request: web.Request, user_id: str | None) -> web.StreamResponse:
    app = request.app[_APP]
    clock = app.registry.clock
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[_STREAMS]
    streams.add(task)
    try:
        with app.registry.feed.subscribe(user_id) as sub:
            await response.write(b": connected\n\n")
            while True:
                try:
                    record = await sub.next(KEEPALIVE_S)
                except SubscriptionDropped:
                    await response.write(b"event: dropped\ndata: {}\n\n")
                    break
                if record is None:
                    await response.write(b": keepalive\n\n")
                    continue
                data = json.dumps(transition_json(clock, record), ensure_ascii=False)
                await response.write(f"event: transition\ndata: {data}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        streams.discard(task)
    with suppress(ConnectionError):
        await response.write_eof()
    return response
