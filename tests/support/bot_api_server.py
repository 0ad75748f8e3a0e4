"""A Bot API stand-in over real HTTP on 127.0.0.1 (port 0) that keeps updates as Telegram does:
an update stays pending until a getUpdates `offset` above its id confirms it, and tests may
queue raw JSON that no parser accepts. Enough of the API for `butler run` in polling mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "777:TEST-stand-in-token"
BOT = {"id": 777, "is_bot": True, "first_name": "Butler", "username": "butler_stand_in_bot"}


@dataclass(frozen=True, slots=True)
class Delivered:
    chat_id: int
    text: str
    at: float
    """time.monotonic() when the bot sent it."""


@dataclass
class BotApiStandIn:
    token: str = TOKEN
    pending: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Delivered] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)
    """The `offset` of every getUpdates, in order."""
    hold_confirmations: bool = False
    """While set, offsets hide confirmed updates from the poller but do not drop them, as if
    the confirmation never reached Telegram: a process started later gets them again."""
    first_update_id: int = 1
    """Telegram's update ids only grow: a second stand-in after a first (a benchmark's next
    pass on one stream) starts above the first's."""
    _ids: itertools.count[int] = field(init=False)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __post_init__(self) -> None:
        self._ids = itertools.count(self.first_update_id)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> BotApiStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what users do ------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    async def push(self, raw: dict[str, Any]) -> None:
        """Queue one update as Telegram would hold it (raw JSON, valid or not)."""
        async with self._changed:
            self.pending.append(raw)
            self._changed.notify_all()

    async def send_text(self, user: int, text: str) -> int:
        update_id = self.next_id()
        await self.push(
            {
                "update_id": update_id,
                "message": {
                    "message_id": update_id,
                    "date": int(time.time()),
                    "chat": {"id": user, "type": "private", "first_name": "U"},
                    "from": {"id": user, "is_bot": False, "first_name": "U", "language_code": "en"},
                    "text": text,
                },
            }
        )
        return update_id

    def texts(self, chat_id: int) -> list[str]:
        return [d.text for d in self.sent if d.chat_id == chat_id]

    async def wait_until(self, check: Any, within: float) -> None:
        """Wait (at most `within` seconds) until `check()` holds; TimeoutError otherwise."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(check)

    # -- the Bot API ----------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        params = await _params(request)
        method = request.match_info["method"].lower()
        if method == "getupdates":
            result: Any = await self._get_updates(params)
        elif method == "getme":
            result = BOT
        elif method == "sendmessage":
            result = await self._send_message(params)
        elif method in ("deletewebhook", "sendchataction", "setwebhook"):
            result = True
        else:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        return web.json_response({"ok": True, "result": result})

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params["offset"]) if "offset" in params else None
        limit = int(params.get("limit", 100))
        timeout = float(params.get("timeout", 0))
        floor = -1 if offset is None else offset
        async with self._changed:
            self.offsets.append(offset)
            if offset is not None and not self.hold_confirmations:
                self.pending = [u for u in self.pending if _id(u) >= offset]
            self._changed.notify_all()

            def visible() -> list[dict[str, Any]]:
                return [u for u in self.pending if _id(u) >= floor]

            if not visible() and timeout > 0:
                # A long poll: hold the request until an update arrives or the timeout passes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(lambda: bool(visible()))
            return visible()[:limit]

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        async with self._changed:
            self.sent.append(Delivered(chat_id, str(params["text"]), time.monotonic()))
            self._changed.notify_all()
        return {
            "message_id": len(self.sent),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": BOT,
            "text": params["text"],
        }


def _id(raw: dict[str, Any]) -> int:
    value = raw.get("update_id")
    return value if isinstance(value, int) else -1


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body: dict[str, Any] = await request.json()
        return body
    form = await request.post()
    return {key: value for key, value in form.items() if isinstance(value, str)}
