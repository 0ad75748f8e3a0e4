"""`butler chat [--user ID] [--language ru|en]`: a conversation in the terminal.

Interactive (a TTY): line editing and history (readline, kept in the data dir), replies
wrapped to the terminal width; `/exit`, `/quit`, Ctrl-D leave (exit code 0), and Ctrl-C at
the prompt leaves at once (130). Piped: one reply per input line, each on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
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

LEAVE = frozenset({"/exit", "/quit"})
HISTORY_FILE = "chat_history"
HISTORY_LENGTH = 1000

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

    def __init__(self, out: TextIO, *, one_line: bool, width: int | None = None) -> None:
        self._out = out
        self._one_line = one_line
        self._width = width
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
        elif self._width:
            text = wrap(text, self._width)
        print(text, file=self._out, flush=True)


def wrap(text: str, width: int) -> str:
    """Each line of `text` filled to `width` columns; blank lines (paragraphs) kept."""
    return "\n".join(
        textwrap.fill(part, width, break_on_hyphens=False) if part.strip() else ""
        for part in text.splitlines()
    )


class Prompt:
    """Reads the user's lines. On a terminal, `input()` with readline runs on a daemon
    thread, so Ctrl-C is handled by the event loop at once instead of waiting for Enter
    (a thread of the default executor would hold the exit until a line came)."""

    def __init__(self, stdin: TextIO, *, history: Path | None) -> None:
        self._stdin = stdin
        self._history = history
        self._interactive = history is not None

    async def read(self) -> str | None:
        """The next line without its end, or None at the end of input (Ctrl-D)."""
        if not self._interactive:
            text = await asyncio.to_thread(self._stdin.readline)
            return text.rstrip("\n") if text else None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(value: str | None) -> None:
            if not answer.done():
                answer.set_result(value)

        def ask() -> None:
            try:
                value: str | None = input("> ")
            except EOFError:
                value = None
                print(file=sys.stdout, flush=True)
            loop.call_soon_threadsafe(settle, value)

        threading.Thread(target=ask, name="chat-prompt", daemon=True).start()
        return await answer

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Line editing and history for the conversation; the terminal as it was after."""
        if not self._interactive or self._history is None:
            yield
            return
        import readline
        import termios

        saved = termios.tcgetattr(self._stdin.fileno())
        with contextlib.suppress(OSError):
            readline.read_history_file(self._history)
        readline.set_history_length(HISTORY_LENGTH)
        try:
            yield
        except BaseException:  # Ctrl-C: end the half-typed line before the shell's prompt
            print(file=sys.stdout, flush=True)
            raise
        finally:
            # Ctrl-C may leave readline mid-line: give the terminal back its echo and modes.
            termios.tcsetattr(self._stdin.fileno(), termios.TCSADRAIN, saved)
            with contextlib.suppress(OSError):
                self._history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(self._history)


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
    # Each line waits for its reply, so nothing could share a turn: no coalescing window.
    settings = replace(settings, actors=replace(settings.actors, coalesce_s=0.0))
    interactive = stdin.isatty() and out.isatty()
    width = shutil.get_terminal_size().columns - 1 if interactive else None
    sink = ConsoleSink(out, one_line=not interactive, width=width)
    prompt = Prompt(stdin, history=settings.data_dir / HISTORY_FILE if interactive else None)
    async with open_app(settings, sink=sink) as app:
        if not await app.llm.probe():
            print(no_llm_hint(app.llm, settings), file=sys.stderr)
        with prompt.session():
            while True:
                text = await prompt.read()
                if text is None:
                    return 0
                text = text.strip()
                if text in LEAVE:
                    return 0
                if text:
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
