"""The admin API's views: live actors, one user, usage, profiles, the machine, history."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.admin.backend import APP, PARTITIONS, TRACE_URL, error, known
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
from engine.errors import StoreUnavailable


async def get_actors(request: web.Request) -> web.Response:
    app = request.app[APP]
    state = request.query.get("state", "")
    views = [v for v in app.registry.views() if not state or v.state == state]
    views.sort(key=lambda v: v.user_id)
    clock = app.registry.clock
    body: dict[str, Any] = {
        "actors": [actor_json(clock, v) for v in views],
        "personalization": app.registry.settings.personalization,
    }
    source = request.app[PARTITIONS]
    if source is not None:  # a worker on a broker; absent otherwise
        body["partitions"] = await source()
    return web.json_response(body)


async def get_actor(request: web.Request) -> web.Response:
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    registry, clock = app.registry, app.registry.clock
    try:
        profile = await app.store.get_profile(user_id)
        context = await app.store.load_turn(user_id, limit=0, before="\uffff")
    except StoreUnavailable:
        return error(503, "store unavailable")
    actor = registry.get(user_id)
    if actor is None and profile is None:
        return error(404, "no such user")
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


async def get_usage(request: web.Request) -> web.Response:
    """The user's token usage, the budgets, the level and when it renews."""
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    registry = app.registry
    now = registry.clock.now()
    try:
        if not await known(app, user_id):
            return error(404, "no such user")
        usage = await app.store.usage(user_id, now=now)
    except StoreUnavailable:
        return error(503, "store unavailable")
    return web.json_response(usage_json(user_id, usage, registry.settings, now))


async def get_profiles(request: web.Request) -> web.Response:
    app = request.app[APP]
    try:
        limit = min(max(int(request.query.get("limit", "500")), 1), 1000)
    except ValueError:
        return error(400, "limit must be an integer")
    try:
        page = await app.store.list_profiles(limit=limit, after=request.query.get("after", ""))
    except StoreUnavailable:
        return error(503, "store unavailable")
    live = {v.user_id: v.state for v in app.registry.views()}
    return web.json_response(
        {
            "profiles": [
                {**profile_json(p), "state": live.get(p.user_id, "passive")} for p in page
            ],
            "next_after": page[-1].user_id if len(page) == limit else None,
        }
    )


async def get_machine(request: web.Request) -> web.Response:
    app = request.app[APP]
    return web.json_response(machine_json(app.registry, transition_counts(app.metrics)))


async def get_history(request: web.Request) -> web.Response:
    """One user's conversation (PII masked), summary and transitions with trace links."""
    app = request.app[APP]
    user_id = request.match_info["user_id"]
    try:
        limit = min(max(int(request.query.get("limit", str(DEFAULT_LIMIT))), 0), MAX_LIMIT)
    except ValueError:
        return error(400, "limit must be an integer")
    try:
        profile, events, total = await conversation(app.store, user_id, limit=limit)
    except StoreUnavailable:
        return error(503, "store unavailable")
    actor = app.registry.get(user_id)
    if actor is None and profile is None and not events:
        return error(404, "no such user")
    records = list(actor.history) if actor is not None else []
    timeline = timeline_json(app.registry.clock, records, request.app[TRACE_URL])
    data = history_json(user_id, profile, events, total, timeline)
    data["state"] = actor.state if actor is not None else "passive"
    data["trace_url"] = request.app[TRACE_URL] or None
    return web.json_response(data)
