"""The Telegram side of end-to-end tests: `telegram-test-api` (npm) on 127.0.0.1, its user
client, and a test-only aiogram session middleware for what the emulator lacks.

The emulator implements getUpdates, sendMessage, editMessageText, answerCallbackQuery and
webhooks, and a client API to post users' messages. It lacks `is_bot` in getMe, sendChatAction,
getFile and file downloads, and its getUpdates never waits. `EmulatorGaps` answers those
calls itself (recording chat actions with their time), and `FileServer` serves the files that
getFile names, so the bot under test runs its real download code over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import GetFile, GetMe, GetUpdates, SendChatAction, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import File, Update, User
from aiohttp import web

from tests.support.tools import ROOT, require

TOKEN = "123456:TEST-butler-emulated-token"
BOT_ID = 123456

_LAUNCH = """
const TelegramServer = require('telegram-test-api');
const server = new TelegramServer({port: Number(process.argv[1]), host: '127.0.0.1',
                                   storeTimeout: 600});
server.start().then(() => console.log('READY'));
process.on('SIGTERM', () => server.stop().then(() => process.exit(0)));
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FileServer:
    """Serves `/file/bot<token>/<path>` for files the tests registered."""

    files: dict[str, bytes] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/file/bot{token}/{path:.+}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        body = self.files.get(request.match_info["path"])
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/octet-stream")


class EmulatorGaps(BaseRequestMiddleware):
    """Answers the Bot API calls `telegram-test-api` does not implement."""

    def __init__(self, files: dict[str, bytes], url: str) -> None:
        self.files = files
        self.url = url
        self._http: aiohttp.ClientSession | None = None
        self.actions: list[tuple[int, str, float]] = []
        self.action_seen = asyncio.Event()

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        result: Any
        if isinstance(method, GetMe):
            result = User(id=BOT_ID, is_bot=True, first_name="Butler", username="butler_test_bot")
        elif isinstance(method, SendChatAction):
            self.actions.append((int(method.chat_id), str(method.action), time.monotonic()))
            self.action_seen.set()
            result = True
        elif isinstance(method, GetFile):
            path = f"voice/{method.file_id}.oga"
            size = len(self.files.get(path, b""))
            result = File(
                file_id=method.file_id,
                file_unique_id=method.file_id,
                file_size=size,
                file_path=path,
            )
        elif isinstance(method, GetUpdates):
            result = await self._updates(bot)
            if not result and method.timeout:
                # The emulator answers at once; a real server holds the request open.
                await asyncio.sleep(0.02)  # noqa: TID251 - stands in for the long poll
        else:
            return await make_request(bot, method)
        # A session's make_request hands back the result itself, not the Response envelope.
        return result  # type: ignore[no-any-return]

    async def _updates(self, bot: Bot) -> list[Update]:
        """getUpdates, patched: the emulator drops a callback query's `chat_instance`."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(f"{self.url}/bot{bot.token}/getUpdates") as response:
            data = await response.json()
        updates = []
        for raw in data["result"]:
            if "callback_query" in raw:
                raw["callback_query"].setdefault("chat_instance", str(raw["callback_query"]["id"]))
            updates.append(Update.model_validate(raw, context={"bot": bot}))
        return updates

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class Emulator:
    """A running emulator plus a client that plays the users."""

    def __init__(self, proc: subprocess.Popen[str], port: int, files: FileServer) -> None:
        self.proc = proc
        self.port = port
        self.files = files
        self.gaps = EmulatorGaps(files.files, self.url)
        self._message_ids = itertools.count(1_000)
        self._read: dict[int, list[dict[str, Any]]] = {}
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> TelegramAPIServer:
        return TelegramAPIServer(
            base=f"{self.url}/bot{{token}}/{{method}}",
            file=f"http://127.0.0.1:{self.files.port}/file/bot{{token}}/{{path}}",
        )

    @classmethod
    async def start(cls) -> Emulator:
        node = require("node")
        modules = ROOT / "tests" / "node" / "node_modules"
        if not (modules / "telegram-test-api").exists():
            require("telegram-test-api-is-installed")  # fails under CI, skips elsewhere
        port = free_port()
        env = dict(os.environ, NODE_PATH=str(modules))
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read below with a deadline
            [node, "-e", _LAUNCH, str(port)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        if line.strip() != "READY":
            proc.kill()
            raise RuntimeError(f"telegram-test-api did not start: {line!r}")
        files = FileServer()
        await files.start()
        return cls(proc, port, files)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.gaps.close()
        await self.files.stop()
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(f"{self.url}{path}", json=body) as response:
            data: dict[str, Any] = await response.json()
            assert data.get("ok"), data
            return data

    def _message(self, user: int, *, language: str, name: str) -> dict[str, Any]:
        return {
            "botToken": TOKEN,
            "date": int(time.time()),
            "from": {
                "id": user,
                "is_bot": False,
                "first_name": name,
                "language_code": language,
            },
            "chat": {"id": user, "type": "private", "first_name": name},
        }

    async def send_text(
        self, user: int, text: str, *, language: str = "ru", name: str = "Брюс"
    ) -> None:
        body = self._message(user, language=language, name=name) | {"text": text}
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            body["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
            await self._post("/sendCommand", body)
        else:
            await self._post("/sendMessage", body)

    async def send_voice(
        self, user: int, audio: bytes, *, duration: int, language: str = "ru", name: str = "Брюс"
    ) -> str:
        file_id = f"voice{next(self._message_ids)}"
        self.files.files[f"voice/{file_id}.oga"] = audio
        body = self._message(user, language=language, name=name) | {
            "voice": {
                "file_id": file_id,
                "file_unique_id": file_id,
                "duration": duration,
                "mime_type": "audio/ogg",
                "file_size": len(audio),
            }
        }
        await self._post("/sendMessage", body)
        return file_id

    async def press(
        self, user: int, data: str, message: dict[str, Any], *, name: str = "Брюс"
    ) -> None:
        """Press an inline button with callback `data` under the bot's `message`."""
        sender = self._message(user, language="ru", name=name)["from"]
        shown = {
            "message_id": message["message_id"],
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": name},
            "text": message["text"],
        }
        body = {"botToken": TOKEN, "from": sender, "message": shown, "data": data}
        await self._post("/sendCallback", body)

    async def bot_messages(self, user: int) -> list[dict[str, Any]]:
        """Everything the bot sent to `user`'s chat so far, oldest first."""
        data = await self._post("/getUpdates", {"token": TOKEN, "chatId": user})
        read = self._read.setdefault(user, [])
        read.extend(item["message"] | {"message_id": item["messageId"]} for item in data["result"])
        return list(read)

    async def wait_for(
        self,
        user: int,
        done: Callable[[list[dict[str, Any]]], bool],
        *,
        within: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll the user's chat until `done(messages)` holds; fail after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            messages = await self.bot_messages(user)
            if done(messages):
                return messages
            if time.monotonic() > deadline:
                texts = [m.get("text") for m in messages]
                raise AssertionError(f"chat {user} never got there; it has {texts}")
            await asyncio.sleep(0.05)  # noqa: TID251 - the emulator offers no push to wait on

    async def texts(self, user: int, count: int, *, within: float = 30.0) -> list[str]:
        """Wait for at least `count` bot messages in the user's chat; their texts."""
        messages = await self.wait_for(user, lambda m: len(m) >= count, within=within)
        return [str(m.get("text", "")) for m in messages]


def dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


__all__ = ["BOT_ID", "TOKEN", "Emulator", "EmulatorGaps", "FileServer", "Path", "free_port"]
