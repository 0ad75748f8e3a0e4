"""Live transitions as server-sent events: one user's, or every user's."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

from aiohttp import web

from actors.history import SubscriptionDropped
from adapters.admin.backend import APP, KEEPALIVE_S, STREAMS
from adapters.admin.views import transition_json


async def all_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, None)


async def actor_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.match_info["user_id"])


async def _stream(request: web.Request, user_id: str | None) -> web.StreamResponse:
    app = request.app[APP]
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
    streams = request.app[STREAMS]
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
