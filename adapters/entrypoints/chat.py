"""`butler chat [--user ID] [--language ru|en]`: a conversation in the terminal.

Interactive (a TTY): line editing and history (readline), replies wrapped to the terminal
width; `/exit`, `/quit`, Ctrl-D leave, and Ctrl-C at the prompt leaves at once. Piped: one
reply per input line, each on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from opentelemetry import trace

from actors.registry import Registry, Rejected
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_app
from engine.domain import Language
from engine.errors import StoreUnavailable
from engine.persona import line
from engine.ports import OutgoingReply

tracer = trace.get_tracer("butler.cli")

NO_LLM_HINT = (
    "butler: no language model answers at {urls}; replies are canned (degraded) until one does.\n"
    "butler: start a local OpenAI-compatible server, e.g. `llama-server -m model.gguf --port "
    "8080` (llama.cpp), `ollama serve` (then BUTLER_LLM_URL=http://127.0.0.1:11434/v1 "
    "BUTLER_LLM_MODEL=<model>) or vLLM, and point BUTLER_LLM_URL at its /v1 base URL."
)


def no_llm_hint(llm: object, settings: Settings) -> str:
    """Why replies will be canned: a refused key names its setting, else how to start one."""
    problem = getattr(llm, "problem", None)
    if isinstance(problem, str) and problem:
        return (
            f"butler: the language model at {settings.llm_urls[0]} refused us ({problem});"
            " replies are canned (degraded) until it answers."
        )
    return NO_LLM_HINT.format(urls=", ".join(settings.llm_urls))


class ConsoleSink:
    """Hands replies to whoever waits for them; prints the others as they come."""

    def __init__(self, out: TextIO, *, one_line: bool) -> None:
        self._out = out
        self._one_line = one_line
        self._waiting: dict[str, asyncio.Future[OutgoingReply]] = {}

    async def deliver(self, reply: OutgoingReply) -> str:
        future = self._waiting.pop(reply.reply_to, None)
        if future is not None and not future.done():
            future.set_result(reply)
        else:
            self.show(reply.text)
        return "terminal"

    def expect(self, event_id: str) -> asyncio.Future[OutgoingReply]:
        future: asyncio.Future[OutgoingReply] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        return future

    def show(self, text: str) -> None:
        if self._one_line:
            text = " ".join(text.split())
        print(text, file=self._out, flush=True)


async def main(settings: Settings, args: argparse.Namespace) -> int:
    return await chat(settings, args.user, sys.stdin, sys.stdout, language=args.language)


async def chat(
    settings: Settings,
    user_id: str,
    stdin: TextIO,
    out: TextIO,
    *,
    language: Language | None = None,
) -> int:
    """Converse with `user_id`'s actor: one reply per input line when stdin is not a TTY."""
    interactive = stdin.isatty()
    sink = ConsoleSink(out, one_line=not interactive)
    async with open_app(settings, sink=sink) as app:
        if not await app.llm.probe():
            print(no_llm_hint(app.llm, settings), file=sys.stderr)
        while True:
            if interactive:
                print("> ", end="", file=out, flush=True)
            text = await asyncio.to_thread(stdin.readline)
            if not text:
                return 0
            text = text.strip()
            if not text:
                continue
            await exchange(app.registry, sink, user_id, text, language=language)


async def exchange(
    registry: Registry,
    sink: ConsoleSink,
    user_id: str,
    text: str,
    *,
    language: Language | None = None,
) -> None:
    """Tell the actor one message and show its reply (or why it was not taken)."""
    with tracer.start_as_current_span("chat.message"):  # the message's trace root
        try:
            ticket = await registry.tell_text(user_id, text, language=language)
        except StoreUnavailable:  # nothing was stored, and a terminal sends nothing again
            sink.show(line("store_down", language or "ru", text))
            print("butler: the store is unavailable; the message was not kept", file=sys.stderr)
            return
    if isinstance(ticket, Rejected):
        sink.show(ticket.reply)
        return
    # tell() returns without yielding after the store write resolves, so the actor has not
    # run yet and the reply cannot arrive before we start waiting for it.
    reply = await sink.expect(ticket.event_id)
    sink.show(reply.text)
