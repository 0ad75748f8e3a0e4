"""From an update's arrival at the Bot API server to the typing action in its chat.

A Bot API stand-in (aiohttp on 127.0.0.1) holds `getUpdates` open like Telegram does, hands
the bot one update at a time (or a burst, `--burst`), and stamps when the bot's
`sendChatAction` and `sendMessage` requests arrive. The bot is `butler run`'s `serve` as in
production (aiohttp session, our polling loop, routers, registry, actors, real SQLite) with an
in-process zero-latency model behind the LanguageModel port, so the numbers are the front
door's and the engine's own, not a model's.

Printed (one JSON line): p50/p90/p99/max milliseconds from update enqueue to typing, and to
the reply, for `--messages` updates from `--users` users; the target for typing is <= 100 ms;
how many `sendMessage` and `sendChatAction` calls the bot made (chat actions per reply), and
the most of the two in any one second against the bot-wide budget (Telegram's 30 a second).
Every update's text is distinct, so the response cache never answers for the model and
`--model-ms` is the wait every reply sees.

    .venv/bin/python -m bench.telegram_bench [--messages 300] [--users 30] [--burst 1]
        [--model-ms 0]   (a model latency makes typing refresh while replies are owed)
        [--actions-fail 0]   (e.g. 500: a Bot API server that fails chat actions)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import deque
from typing import Any

from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from adapters.bootstrap.service import serve
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports
from adapters.telegram.service import make_session
from engine.ports import Completion, CompletionRequest

TOKEN = "1:BENCH-token"


class Model:
    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s

    async def complete(self, request: CompletionRequest) -> Completion:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)  # noqa: TID251 - a model that takes its time
        return Completion("Будет исполнено, сэр.", "bench", 0, 10, 5)

    async def probe(self) -> bool:
        return True


class BotAPI:
    def __init__(self, actions_fail: int = 0) -> None:
        self.actions_fail = actions_fail
        self.queue: deque[dict[str, Any]] = deque()
        self.arrived = asyncio.Event()
        self.enqueued: dict[int, float] = {}
        self.typing: dict[int, float] = {}
        self.replied: dict[int, float] = {}
        self.pending_chat: dict[int, deque[int]] = {}
        self.update_id = 0
        self.changed = asyncio.Event()
        self.calls: dict[str, int] = {}
        self.sends: list[float] = []

    def push(self, user: int) -> None:
        self.update_id += 1
        uid = self.update_id
        self.queue.append(
            {
                "update_id": uid,
                "message": {
                    "message_id": uid,
                    "date": int(time.time()),
                    "chat": {"id": user, "type": "private"},
                    "from": {"id": user, "is_bot": False, "first_name": "B", "language_code": "ru"},
                    "text": f"Который час, Альфред? ({uid})",
                },
            }
        )
        self.pending_chat.setdefault(user, deque()).append(uid)
        self.enqueued[uid] = time.perf_counter()
        self.arrived.set()

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = await request.post() if request.can_read_body else {}
        data = {k: str(v) for k, v in form.items()}
        now = time.perf_counter()
        self.calls[method] = self.calls.get(method, 0) + 1
        if method == "getMe":
            return ok({"id": 1, "is_bot": True, "first_name": "Butler", "username": "b"})
        if method == "getUpdates":
            offset = int(data.get("offset", 0) or 0)
            while self.queue and self.queue[0]["update_id"] < offset:
                self.queue.popleft()
            if not self.queue and float(data.get("timeout", 0) or 0) > 0:
                self.arrived.clear()
                try:
                    async with asyncio.timeout(float(data["timeout"])):
                        await self.arrived.wait()
                except TimeoutError:
                    pass
            return ok(list(self.queue)[:100])
        chat = int(data.get("chat_id", 0) or 0)
        if method in ("sendChatAction", "sendMessage"):
            self.sends.append(now)
        if method == "sendChatAction":
            if self.actions_fail:  # a server that lacks or breaks chat actions
                return web.json_response(
                    {"ok": False, "error_code": self.actions_fail, "description": "failed"},
                    status=self.actions_fail,
                )
            for uid in self.pending_chat.get(chat, ()):
                self.typing.setdefault(uid, now)
            return ok(True)
        if method == "sendMessage":
            pending = self.pending_chat.get(chat)
            if pending:
                self.replied[pending.popleft()] = now
            self.changed.set()
            return ok({"message_id": 1, "date": 0, "chat": {"id": chat, "type": "private"}})
        return ok(True)


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def peak_per_s(stamps: list[float]) -> int:
    """The most calls within any one second (a sliding window over the arrival stamps)."""
    ordered = sorted(stamps)
    most = 0
    start = 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def main(args: argparse.Namespace) -> None:
    api = BotAPI(args.actions_fail)
    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(
            {
                "BUTLER_DATA_DIR": tmp,
                "BUTLER_TELEGRAM_TOKEN": TOKEN,
                "BUTLER_TELEGRAM_API_URL": f"http://127.0.0.1:{port}",
                "BUTLER_RATE_LIMIT_PER_MINUTE": "0",
            }
        )
        server = TelegramAPIServer.from_base(f"http://127.0.0.1:{port}")
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(
            serve(
                settings,
                stop=stop,
                telegram_session=make_session(settings.telegram, api=server),
                on_ready=lambda _: ready.set(),
                ports=Ports(llm=Model(args.model_ms / 1000)),
                admin=False,
            )
        )
        await ready.wait()
        sent = 0
        while sent < args.messages:
            for _ in range(args.burst):
                api.push(1000 + sent % args.users)
                sent += 1
            async with asyncio.timeout(120):
                while len(api.replied) < sent:
                    api.changed.clear()
                    await api.changed.wait()
            # Spread the users' messages so the per-chat budget (1/s) does not dominate.
        stop.set()
        await task
    await runner.cleanup()
    typing = [api.typing[u] - api.enqueued[u] for u in api.typing]
    reply = [api.replied[u] - api.enqueued[u] for u in api.replied]
    print(
        json.dumps(
            {
                "messages": args.messages,
                "users": args.users,
                "burst": args.burst,
                "typing_shown": len(typing),
                "send_message": api.calls.get("sendMessage", 0),
                "send_chat_action": api.calls.get("sendChatAction", 0),
                "chat_actions_per_reply": round(
                    api.calls.get("sendChatAction", 0) / max(1, len(reply)), 3
                ),
                "peak_sends_per_s": peak_per_s(api.sends),
                "to_typing_ms": {
                    "p50": pct(typing, 0.5),
                    "p90": pct(typing, 0.9),
                    "p99": pct(typing, 0.99),
                    "max": pct(typing, 1.0),
                },
                "to_reply_ms": {
                    "p50": pct(reply, 0.5),
                    "p99": pct(reply, 0.99),
                    "median_s": round(statistics.median(reply), 4),
                },
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument(
        "--actions-fail", type=int, default=0, help="answer sendChatAction with this status"
    )
    parser.add_argument("--model-ms", type=float, default=0.0, help="model latency per call")
    asyncio.run(main(parser.parse_args()))
