"""`butler chat [--user ID] [--language ru|en]`: a conversation in the terminal.

Interactive (a TTY): line editing and history (readline, kept in the data dir), replies
wrapped to the terminal width; `/exit`, `/quit`, Ctrl-D leave (exit code 0), and Ctrl-C at
the prompt leaves at once (130). Piped: one reply per input line, each on one line.

A user is served by one process at a time: when another Butler process serves this user on
the same store, `chat` says so in one line and exits with code 3, before the prompt, or as
soon as that process takes the user over mid-session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import textwrap
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO, TypeVar

from opentelemetry import trace

from actors.registry import Registry, Rejected
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_app, store_name
from engine.domain import Language
from engine.errors import OwnedElsewhere, StoreUnavailable
from engine.persona import line
from engine.ports import OutgoingReply

tracer = trace.get_tracer("butler.cli")
T = TypeVar("T")

LEAVE = frozenset({"/exit", "/quit"})
EXIT_OWNED_ELSEWHERE = 3
"""The exit code when another Butler process serves the user (before or during the chat)."""
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


def owned_elsewhere(exc: OwnedElsewhere, user_id: str, settings: Settings) -> str:
    """The one line that says who serves the user instead of this process."""
    until = exc.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"butler: another Butler process ({exc.owner}) serves user {user_id!r} on "
        f"{store_name(settings)}; its claim runs until {until} and is renewed while it lives. "
        "Leave that chat (or stop that service) first."
    )


def taken_over(user_id: str, settings: Settings) -> str:
    return (
        f"butler: another Butler process took user {user_id!r} over on {store_name(settings)} "
        "(this one had stopped renewing its claim); this chat ends, and that process answers "
        "what was typed here."
    )


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
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(value: str | None) -> None:
            if not answer.done():
                answer.set_result(value)

        def ask() -> None:
            value: str | None
            if not self._interactive:  # a daemon thread too: a chat ending mid-read exits
                text = self._stdin.readline()
                value = text.rstrip("\n") if text else None
            else:
                try:
                    value = input("> ")
                except EOFError:
                    value = None
                    print(file=sys.stdout, flush=True)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
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
    lost = asyncio.Event()
    async with open_app(settings, sink=sink, hand_over=False, on_lost=lambda _: lost.set()) as app:
        if not await app.llm.probe():
            print(no_llm_hint(app.llm, settings), file=sys.stderr)
        try:
            await app.registry.wake(user_id)  # the claim; stored messages are answered now
            with prompt.session():
                while True:
                    text = await _unless_lost(prompt.read(), lost)
                    if text is None:
                        return 0
                    text = text.strip()
                    if text in LEAVE:
                        return 0
                    if text:
                        await exchange(
                            app.registry, sink, user_id, text, language=language, lost=lost
                        )
        except OwnedElsewhere as exc:
            print(owned_elsewhere(exc, user_id, settings), file=sys.stderr)
            return EXIT_OWNED_ELSEWHERE
        except _Lost:
            print(taken_over(user_id, settings), file=sys.stderr)
            return EXIT_OWNED_ELSEWHERE


class _Lost(Exception):
    """This process no longer serves the user."""


async def _unless_lost(work: Awaitable[T], lost: asyncio.Event) -> T:
    """The outcome of `work`, unless the user's claim is lost first (`_Lost`)."""
    if lost.is_set():
        raise _Lost
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        raise _Lost
    return task.result()


async def exchange(
    registry: Registry,
    sink: ConsoleSink,
    user_id: str,
    text: str,
    *,
    language: Language | None = None,
    lost: asyncio.Event | None = None,
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
    expected = sink.expect(ticket.event_id)
    reply = await (expected if lost is None else _unless_lost(expected, lost))
    sink.show(reply.text)
