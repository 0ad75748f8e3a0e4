"""Start-up benchmark: `butler --help`, `butler admin list`, and `butler run` to its first
`getUpdates`, side by side with a plain python-telegram-bot bot when one is given.

A Bot API stand-in on 127.0.0.1 (port 0) answers getMe, deleteWebhook and getUpdates and
notes when the first getUpdates arrives; each command runs as a fresh process, and the time
is from its spawn to that request. Medians of `--runs`, all measured in one run.

    python -m bench.startup_bench --runs 5 [--ptb-python /path/to/venv/bin/python]

The PTB bot is `Application.builder().token(...).base_url(...).build().run_polling()` with
one echo handler: the smallest bot a user would write. Its python must have
`python-telegram-bot` installed (kept out of Butler's dependencies on purpose).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

TOKEN = "123:STARTUP-bench"
PTB_BOT = """
import sys
from telegram.ext import Application, MessageHandler, filters

async def echo(update, context):
    await update.message.reply_text(update.message.text)

app = Application.builder().token(sys.argv[1]).base_url(sys.argv[2]).build()
app.add_handler(MessageHandler(filters.TEXT, echo))
app.run_polling()
"""


class StandIn:
    """The Bot API stand-in: records the monotonic time of the first getUpdates."""

    def __init__(self) -> None:
        self.first_poll: asyncio.Future[float] | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _call(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        result: Any = True
        if method == "getme":
            result = {"id": 123, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
        elif method == "getupdates":
            if self.first_poll is not None and not self.first_poll.done():
                self.first_poll.set_result(time.monotonic())
            result = []
        return web.json_response({"ok": True, "result": result})


async def time_to_first_poll(stand_in: StandIn, argv: list[str], env: dict[str, str]) -> float:
    stand_in.first_poll = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        exited: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
        await asyncio.wait({stand_in.first_poll, exited}, timeout=60, return_when="FIRST_COMPLETED")
        exited.cancel()
        if not stand_in.first_poll.done():
            assert proc.stderr is not None
            if proc.returncode is None:
                proc.kill()
            err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            raise SystemExit(f"no getUpdates within 60 s from {argv[:3]}:\n{err}")
        polled = stand_in.first_poll.result()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    return polled - started


def time_command(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms  (min {min(values) * 1000:.0f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ptb-python", help="a python with python-telegram-bot installed")
    parser.add_argument(
        "--butler",
        default=f"{sys.executable} -m adapters.entrypoints.cli",
        help="the butler command to time (default: this python, -m adapters.entrypoints.cli)",
    )
    args = parser.parse_args()
    butler = args.butler.split()
    stand_in = StandIn()
    await stand_in.start()
    data = Path(tempfile.mkdtemp(prefix="butler-startup-"))
    env = {
        **os.environ,
        "BUTLER_DATA_DIR": str(data),
        "BUTLER_TELEGRAM_TOKEN": TOKEN,
        "BUTLER_TELEGRAM_API_URL": f"http://127.0.0.1:{stand_in.port}",
        "BUTLER_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
        "BUTLER_ADMIN_URL": "http://127.0.0.1:9",  # a closed port: admin list reads the store
        "BUTLER_LLM_URL": "http://127.0.0.1:9/v1",
    }
    rows: dict[str, list[float]] = {"butler --help": [], "butler admin list": []}
    rows["butler run -> getUpdates"] = []
    if args.ptb_python:
        rows["python-telegram-bot -> getUpdates"] = []
    try:
        for _ in range(args.runs):
            rows["butler --help"].append(time_command([*butler, "--help"], env))
            rows["butler admin list"].append(time_command([*butler, "admin", "list"], env))
            rows["butler run -> getUpdates"].append(
                await time_to_first_poll(stand_in, [*butler, "run"], env)
            )
            if args.ptb_python:
                base = f"http://127.0.0.1:{stand_in.port}/bot"
                rows["python-telegram-bot -> getUpdates"].append(
                    await time_to_first_poll(
                        stand_in, [args.ptb_python, "-c", PTB_BOT, TOKEN, base], env
                    )
                )
    finally:
        await stand_in.stop()
    load = os.getloadavg()[0]
    print(f"start-up, median of {args.runs} (load {load:.1f} on {os.cpu_count()} cores)")
    for name, values in rows.items():
        print(f"  {name:36} {median_ms(values)}")
    if args.ptb_python:
        ratio = statistics.median(rows["butler run -> getUpdates"]) / statistics.median(
            rows["python-telegram-bot -> getUpdates"]
        )
        print(f"  butler run / python-telegram-bot: {ratio:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
