"""The admin API's commands: reset, erase, profile updates and compression go through the
actor's mailbox; a user's token counts are reset in the store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from actors.registry import Rejected
from adapters.admin.backend import (
    APP,
    COMMAND_TIMEOUT_S,
    AdminBackend,
    error,
    known,
    served_elsewhere,
)
from adapters.admin.views import profile_json, usage_json
from engine.domain import InvalidProfileError
from engine.errors import ButlerError, OwnedElsewhere, StoreUnavailable
from engine.messages import Command, CompressMemory, ResetActor, UpdateProfile


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
        if not await known(app, user_id):
            return error(404, "no such user")
        if not wait:
            ticket = await app.registry.tell(user_id, command)
            return error(503, "mailbox full") if isinstance(ticket, Rejected) else None
        ticket, done = await app.registry.ask(user_id, command)
        if isinstance(ticket, Rejected):
            return error(503, "mailbox full")
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            failure = await done
    except TimeoutError:
        return error(504, "the actor did not handle the command in time")
    except OwnedElsewhere as exc:
        return served_elsewhere(exc)
    except ButlerError as exc:  # store down, shutting down
        return error(503, type(exc).__name__)
    if failure is not None:
        return error(500, type(failure).__name__)
    return None


async def _erase(app: AdminBackend, user_id: str) -> web.Response:
    """The one erase path, as /forget: the actor stops, then every record goes."""
    try:
        if not await known(app, user_id):
            return error(404, "no such user")
        await app.registry.erase(user_id)
    except OwnedElsewhere as exc:
        return served_elsewhere(exc)
    except ButlerError as exc:  # store down, shutting down
        return error(503, type(exc).__name__)
    return web.json_response({"reset": True, "erased": True, "state": "passive"})


async def post_reset(request: web.Request) -> web.Response:
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    body = await _json_body(request)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        return error(400, "erase must be true or false")
    if erase:
        return await _erase(app, user_id)
    failed = await _command(app, user_id, ResetActor(), wait=True)
    if failed is not None:
        return failed
    actor = app.registry.get(user_id)
    return web.json_response(
        {"reset": True, "erased": erase, "state": actor.state if actor else "passive"}
    )


async def post_compress(request: web.Request) -> web.Response:
    app = request.app[APP]
    failed = await _command(
        app,
        request.match_info["user_id"],
        CompressMemory(eager=request.query.get("eager") == "1"),
        wait=False,
    )
    return failed or web.json_response({"accepted": True}, status=202)


_PROFILE_FIELDS = frozenset({"persona", "tone", "language", "topics"})


async def patch_profile(request: web.Request) -> web.Response:
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    body = await _json_body(request)
    unknown = set(body) - _PROFILE_FIELDS
    if unknown:
        return error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    topics = body.get("topics")
    if topics is not None and not (
        isinstance(topics, list) and all(isinstance(t, str) for t in topics)
    ):
        return error(400, "topics must be a list of strings")
    for key in ("persona", "tone", "language"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return error(400, f"{key} must be a string")
    try:
        update = UpdateProfile(
            persona=body.get("persona"),
            tone=body.get("tone"),
            language=body.get("language"),
            topics=None if topics is None else tuple(topics),
        )
    except InvalidProfileError as exc:
        return error(400, str(exc))
    failed = await _command(app, user_id, update, wait=True)
    if failed is not None:
        return failed
    profile = await app.store.get_profile(user_id)
    return web.json_response({"profile": None if profile is None else profile_json(profile)})


async def post_usage_reset(request: web.Request) -> web.Response:
    """Forget the user's token counts: the budget starts afresh on the next message."""
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    registry = app.registry
    try:
        if not await known(app, user_id):
            return error(404, "no such user")
        await app.store.reset_usage(user_id)
        now = registry.clock.now()
        usage = await app.store.usage(user_id, now=now)
    except StoreUnavailable:
        return error(503, "store unavailable")
    return web.json_response({"reset": True, **usage_json(user_id, usage, registry.settings, now)})
