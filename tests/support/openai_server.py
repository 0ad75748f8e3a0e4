"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

In-process: `async with OpenAIServer() as server: ...`. As a process:
`python -m tests.support.openai_server --port N [--mode ok]` prints `READY <port> <control_port>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

# Modes for chat completions; "errorNNN" (e.g. error500, error429) answers with that status.
MODES = ("ok", "slow", "malformed", "drop", "down")
_ERROR_MODE = re.compile(r"error([1-5]\d\d)")

Reply = Callable[[list[dict[str, Any]]], str]


def persona_marker(system_prompt: str) -> str:
    """The marker `default_reply` puts in a reply for a system prompt (its first line)."""
    lines = system_prompt.strip().splitlines()
    return f"[system: {lines[0][:60] if lines else ''}]"


def default_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic reply: the system prompt's marker, then an echo of the last user message."""
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    user = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    if "сводку" in system:  # Butler's summarisation prompt (ru): answer like a good model
        return "Сводка: хозяин беседовал с дворецким о делах и погоде, всё записано."
    if "updated summary" in system:
        return "Summary: the master chatted with the butler about errands and the weather."
    return f"{persona_marker(system)} Very good. You said: {user}"


def check_mode(mode: str) -> str:
    """Return `mode` if the server knows it, else raise ValueError."""
    if mode in MODES or _ERROR_MODE.fullmatch(mode):
        return mode
    raise ValueError(f"unknown mode {mode!r}; use one of {MODES} or errorNNN")


class OpenAIServer:
    """An OpenAI-style `/v1/chat/completions` and `/v1/models` server whose behaviour tests set.

    `mode` applies to every chat request unless `script()` queued per-request modes, which are
    used first. `slow` waits until `release_slow()` (or `slow_delay` seconds, if set), then
    answers normally. `down` stops listening and closes open connections; any other mode
    listens again on the same port. Every chat request's JSON body is kept in `requests`;
    `hits`, `peers` and `authorizations` count every chat request however it was answered, and
    `model_hits` counts `/v1/models` requests, which obey every mode except `slow`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        mode: str = "ok",
        reply: Reply = default_reply,
        model: str = "butler-test-model",
        serve_models: bool = True,
        slow_delay: float | None = None,
        retry_after: str | None = None,
        record: bool = True,
        usage: bool = True,
        control_port: int | None = None,
    ) -> None:
        self.port = port
        self.mode = check_mode(mode)
        self.reply = reply
        self.model = model
        self.serve_models = serve_models
        self.slow_delay = slow_delay
        self.retry_after = retry_after
        self.record = record
        self.usage = usage
        self.requests: list[dict[str, Any]] = []
        self.peers: list[tuple[str, int]] = []
        self.hits = 0
        self.model_hits = 0
        self.authorizations: list[str | None] = []
        self.control_port = control_port
        self._script: deque[str] = deque()
        self._released = asyncio.Event()
        self._hit = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._control_runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. `http://127.0.0.1:8080/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def listening(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (on a free port the first time if `port` is 0), plus the control port if set."""
        if self.control_port is not None and self._control_runner is None:
            self._control_runner = await self._serve(self._control_app(), self.control_port)
            self.control_port = self._control_runner.addresses[0][1]
        if self.mode != "down":
            await self._listen()
        elif self.port == 0:
            # Reserve a real port number so that "down" still refuses on a known address.
            await self._listen()
            await self._unlisten()

    async def stop(self) -> None:
        """Stop everything, releasing slow requests first so they end promptly."""
        self._released.set()
        for task in list(self._tasks):
            await task
        await self._unlisten()
        if self._control_runner is not None:
            runner, self._control_runner = self._control_runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def set_mode(self, mode: str, *, slow_delay: float | None = None) -> None:
        """Switch behaviour now: `down` stops listening, anything else listens again."""
        self.mode = check_mode(mode)
        self._released.set()  # whatever waited under the previous mode answers now
        if mode == "slow":
            self._released = asyncio.Event()
            self.slow_delay = slow_delay
        if mode == "down":
            await self._unlisten()
        elif self._runner is None:
            await self._listen()

    def script(self, *modes: str) -> None:
        """Queue modes for the next chat requests, one each; `mode` applies after them."""
        for mode in modes:
            if check_mode(mode) == "down":
                raise ValueError("down is a server state, not a per-request answer")
            self._script.append(mode)

    def release_slow(self) -> None:
        """Let every waiting (and future, until the next `slow`) slow request answer."""
        self._released.set()

    async def wait_for_hits(self, count: int) -> None:
        """Return once `count` chat requests have arrived (answered or not)."""
        async with self._hit:
            await self._hit.wait_for(lambda: self.hits >= count)

    def system_prompts(self) -> list[str]:
        """The system message of each recorded request ('' where there was none)."""
        return [
            next(
                (str(m.get("content", "")) for m in body["messages"] if m.get("role") == "system"),
                "",
            )
            for body in self.requests
        ]

    async def _serve(self, app: web.Application, port: int) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    async def _listen(self) -> None:
        self._runner = await self._serve(self._api_app(), self.port)
        self.port = self._runner.addresses[0][1]

    async def _unlisten(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _api_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_control", self._control_get)
        app.router.add_post("/_control", self._control_post)
        return app

    def _control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_control", self._control_get)
        app.router.add_post("/_control", self._control_post)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        mode = self._script.popleft() if self._script else self.mode
        async with self._hit:
            self.hits += 1
            self.peers.append(_peer(request))
            self.authorizations.append(request.headers.get("Authorization"))
            self._hit.notify_all()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "messages missing")
        if self.record:
            self.requests.append(body)
        early = await self._misbehave(request, mode)
        if early is not None:
            return early
        if mode == "malformed":
            return web.Response(text='{"choices": [{"message": ', content_type="application/json")
        text = self.reply(body["messages"])
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{self.hits}",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.model:
            answer["model"] = self.model
        if self.usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            completion = len(text.split()) if isinstance(text, str) else 0
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return web.json_response(answer)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.model_hits += 1
        if not self.serve_models:
            return _error(404, "not found")
        # Listing models is quick even on a server slow to generate.
        early = await self._misbehave(request, "ok" if self.mode == "slow" else self.mode)
        if early is not None:
            return early
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]}
        )

    async def _misbehave(self, request: web.Request, mode: str) -> web.StreamResponse | None:
        """Answer for the slow, drop and errorNNN modes; None means answer normally."""
        if mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.slow_delay)
        elif mode == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        elif match := _ERROR_MODE.fullmatch(mode):
            response = _error(int(match.group(1)), f"scripted {mode}")
            if self.retry_after is not None:
                response.headers["Retry-After"] = self.retry_after
            return response
        return None

    async def _control_get(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "mode": self.mode,
                "listening": self.listening,
                "port": self.port,
                "hits": self.hits,
                "requests": self.requests,
            }
        )

    async def _control_post(self, request: web.Request) -> web.StreamResponse:
        """Body: {"mode": ..., "slow_delay": seconds, "retry_after": str, "reset": bool}."""
        try:
            body = await request.json()
            mode = check_mode(str(body.get("mode", self.mode)))
        except (ValueError, AttributeError) as exc:
            return _error(400, str(exc))
        if body.get("reset"):
            self.requests.clear()
            self.hits = 0
        if "retry_after" in body:
            self.retry_after = body["retry_after"]
        delay = body.get("slow_delay")
        change = self.set_mode(mode, slow_delay=float(delay) if delay is not None else None)
        via_control = self._control_runner is not None and request.app is self._control_runner.app
        if mode == "down" and not via_control:
            # Stopping the site that serves this very request: finish answering first.
            task = asyncio.create_task(change)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return web.json_response({"mode": mode, "listening": "closing"}, status=202)
        await change
        return web.json_response({"mode": self.mode, "listening": self.listening})


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "test_error", "code": status}}
    return web.json_response(body, status=status)


def _peer(request: web.Request) -> tuple[str, int]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if peer else ("", 0)


async def _serve_forever(args: argparse.Namespace) -> None:
    server = OpenAIServer(
        port=args.port,
        mode=args.mode,
        control_port=args.control_port,
        slow_delay=args.slow_delay,
        record=not args.no_record,
        model=args.model,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        sys.stdout.write(f"READY {server.port} {server.control_port}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", default="ok", type=check_mode)
    parser.add_argument(
        "--control-port", type=int, default=0, help="always-up port for /_control (0: free port)"
    )
    parser.add_argument("--slow-delay", type=float, default=None)
    parser.add_argument("--model", default="butler-test-model")
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
