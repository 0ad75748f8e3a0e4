"""The `butler` command line: `chat` with a user's actor, `admin` views, the `worker`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

from opentelemetry import trace

from actors.registry import Registry, Rejected
from adapters.admin.commands import add_admin_parser, run_admin
from adapters.app import open_app, open_store, tune_gc
from adapters.logs import configure_logging
from adapters.redaction import install_log_redaction
from adapters.service import serve
from adapters.settings import Settings, SettingsError
from adapters.storage.dump import DumpableStore, DumpError, export_store, import_store
from adapters.telemetry import configure_tracing
from adapters.worker_command import worker
from engine.errors import ButlerError, StoreUnavailable
from engine.persona import line
from engine.ports import OutgoingReply

tracer = trace.get_tracer("butler.cli")

NO_LLM_HINT = (
    "butler: no language model answers at {urls}; replies are canned (degraded) until one does.\n"
    "butler: start a local OpenAI-compatible server, e.g. `llama-server -m model.gguf --port "
    "8080` (llama.cpp), `ollama serve` (then BUTLER_LLM_URL=http://127.0.0.1:11434/v1 "
    "BUTLER_LLM_MODEL=<model>) or vLLM, and point BUTLER_LLM_URL at its /v1 base URL."
)


class ConsoleSink:
    """Hands replies to whoever waits for them; prints the others as they come."""

    def __init__(self, out: TextIO, *, one_line: bool) -> None:
        self._out = out
        self._one_line = one_line
        self._waiting: dict[str, asyncio.Future[OutgoingReply]] = {}

    async def deliver(self, reply: OutgoingReply) -> None:
        future = self._waiting.pop(reply.reply_to, None)
        if future is not None and not future.done():
            future.set_result(reply)
        else:
            self.show(reply.text)

    def expect(self, event_id: str) -> asyncio.Future[OutgoingReply]:
        future: asyncio.Future[OutgoingReply] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        return future

    def show(self, text: str) -> None:
        if self._one_line:
            text = " ".join(text.split())
        print(text, file=self._out, flush=True)


async def chat(settings: Settings, user_id: str, stdin: TextIO, out: TextIO) -> int:
    """Converse with `user_id`'s actor: one reply per input line when stdin is not a TTY."""
    interactive = stdin.isatty()
    sink = ConsoleSink(out, one_line=not interactive)
    async with open_app(settings=settings, sink=sink) as app:
        if not await app.llm.probe():
            print(NO_LLM_HINT.format(urls=", ".join(settings.llm_urls)), file=sys.stderr)
        while True:
            if interactive:
                print("> ", end="", file=out, flush=True)
            text = await asyncio.to_thread(stdin.readline)
            if not text:
                return 0
            text = text.strip()
            if not text:
                continue
            await _exchange(app.registry, sink, user_id, text)


async def _exchange(registry: Registry, sink: ConsoleSink, user_id: str, text: str) -> None:
    with tracer.start_as_current_span("chat.message"):  # the message's trace root
        try:
            ticket = await registry.tell_text(user_id, text)
        except StoreUnavailable:  # nothing was stored: the user is asked to send it again
            sink.show(line("store_down", "ru", text))
            return
    if isinstance(ticket, Rejected):
        sink.show(ticket.reply)
        return
    # tell() returns without yielding after the store write resolves, so the actor has not
    # run yet and the reply cannot arrive before we start waiting for it.
    reply = await sink.expect(ticket.event_id)
    sink.show(reply.text)


async def run(settings: Settings) -> int:
    """`butler run`: the Telegram bot (when a token is set) and the admin server until SIGTERM
    or SIGINT, then a drain."""
    await serve(settings)
    return 0


async def db_command(settings: Settings, command: str, path: Path | None, *, out: TextIO) -> int:
    """`butler db migrate|export PATH|import PATH` on the store named by `BUTLER_STORE`."""
    store = cast(DumpableStore, await open_store(settings))  # opening migrates
    try:
        if command == "export":
            assert path is not None
            counts = await export_store(store, path)
        elif command == "import":
            assert path is not None
            try:
                counts = await import_store(store, path)
            except (DumpError, OSError) as exc:
                print(f"butler: cannot import {path}: {exc}; nothing was written", file=sys.stderr)
                return 2
        else:
            print(f"butler: the store is migrated: {_store_name(settings)}", file=out)
            return 0
    finally:
        await store.close()
    print(f"butler: {command}ed {counts.profiles} profiles and {counts.events} events", file=out)
    return 0


def _store_name(settings: Settings) -> str:
    """The store's location without credentials (a MongoDB URI may hold a password)."""
    if settings.sqlite_path is not None:
        return str(settings.sqlite_path)
    scheme, _, rest = settings.store.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2].partition('?')[0]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="butler", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    chat_p = commands.add_parser("chat", help="talk to the butler in the terminal")
    chat_p.add_argument("--user", default="local", help="user id (default: local)")
    add_admin_parser(commands)
    commands.add_parser(
        "run",
        help="serve the Telegram bot (long polling, or a webhook with BUTLER_WEBHOOK_URL) "
        "and the admin server",
    )
    db = commands.add_parser("db", help="schema, backups and moves between stores")
    db_cmds = db.add_subparsers(dest="db_command", required=True)
    db_cmds.add_parser("migrate", help="create the schema and indexes (idempotent)")
    export = db_cmds.add_parser("export", help="write every profile and event to a JSONL file")
    export.add_argument("path", type=Path)
    load = db_cmds.add_parser("import", help="read a JSONL dump into the store (idempotent)")
    load.add_argument("path", type=Path)
    worker = commands.add_parser("worker", help="compress the memory of eligible users")
    worker.add_argument("--once", action="store_true", help="one sweep, then exit (cron)")
    worker.add_argument("--interval", type=float, metavar="S", help="seconds between sweeps")
    return parser


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "chat":
        return await chat(settings, args.user, sys.stdin, sys.stdout)
    if args.command == "run":
        return await run(settings)
    if args.command == "db":
        path = getattr(args, "path", None)
        return await db_command(settings, args.db_command, path, out=sys.stdout)
    if args.command == "worker":
        return await worker(settings, once=args.once, interval_s=args.interval)
    return await run_admin(settings, args, sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `butler` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"butler: {exc}", file=sys.stderr)
        return 2
    level = settings.log_level
    if args.command == "chat" and not os.environ.get("BUTLER_LOG_LEVEL"):
        level = "ERROR"  # the conversation owns the terminal; the LLM hint is printed anyway
    if args.command == "run" and not os.environ.get("BUTLER_LOG_LEVEL"):
        level = "INFO"  # a service: say what it serves and when it stops
    configure_logging(level=level, fmt=settings.log_format, salt=settings.log_salt)
    logging.getLogger("aiogram").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    install_log_redaction()
    tune_gc()
    provider = configure_tracing()
    try:
        return asyncio.run(_command(settings, args))
    except ButlerError as exc:
        print(f"butler: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if provider is not None:
            provider.shutdown()


if __name__ == "__main__":
    sys.exit(main())
