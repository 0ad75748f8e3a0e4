"""The `butler` command line: parse the arguments, read the settings, run one command.

Only argparse and the settings load here; each command's module (and its libraries: aiogram,
faster-whisper, the OpenTelemetry SDK) is imported when that command runs, so `butler
--help` and `butler admin list` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "butler-assistant"
"""Our name on package indexes (the PyPI name `butler` is an unrelated project)."""

Command = Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]

COMMANDS: dict[str, tuple[str, str]] = {
    "chat": ("adapters.entrypoints.chat", "talk to the butler in the terminal"),
    "run": (
        "adapters.entrypoints.run",
        "serve the Telegram bot (long polling, or a webhook with BUTLER_WEBHOOK_URL) "
        "and the admin server",
    ),
    "front": (
        "adapters.entrypoints.front",
        "the scale-out front door: Telegram updates to the broker (BUTLER_BROKER_URL)",
    ),
    "db": ("adapters.entrypoints.db", "schema, backups and moves between stores"),
    "admin": (
        "adapters.entrypoints.admin",
        "inspect and manage users (via the service, else the store)",
    ),
    "worker": ("adapters.entrypoints.worker", "compress the memory of eligible users"),
}
"""Command name -> (module with `add_arguments(parser)` and `async main(settings, args)`,
help). The modules load only when their command runs; their arguments are declared here."""

TRACED = frozenset({"chat", "run", "worker"})
"""Commands whose spans are exported (when OTEL_* asks for it); the others load no SDK."""

DEFAULT_LOG_LEVEL = {"chat": "ERROR", "run": "INFO", "front": "INFO"}
"""Without BUTLER_LOG_LEVEL: the conversation owns the terminal; a service says what it does."""


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butler",
        description="Butler: a personal Telegram assistant with the manners of a butler.",
    )
    parser.add_argument("--version", action="version", version=f"butler {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help=COMMANDS["chat"][1])
    chat.add_argument("--user", default="local", help="user id (default: local)")
    chat.add_argument(
        "--language",
        choices=("ru", "en"),
        help="language of a new user's profile (default: ru)",
    )
    commands.add_parser("run", help=COMMANDS["run"][1])
    commands.add_parser("front", help=COMMANDS["front"][1])
    db = commands.add_parser("db", help=COMMANDS["db"][1])
    db_cmds = db.add_subparsers(dest="db_command", required=True)
    db_cmds.add_parser("migrate", help="create the schema and indexes (idempotent)")
    export = db_cmds.add_parser("export", help="write every profile and event to a JSONL file")
    export.add_argument("path", type=Path)
    load = db_cmds.add_parser("import", help="read a JSONL dump into the store (idempotent)")
    load.add_argument("path", type=Path)
    _admin_arguments(commands.add_parser("admin", help=COMMANDS["admin"][1]))
    worker = commands.add_parser("worker", help=COMMANDS["worker"][1])
    worker.add_argument("--once", action="store_true", help="one sweep, then exit (cron)")
    worker.add_argument("--interval", type=float, metavar="S", help="seconds between sweeps")
    return parser


def _admin_arguments(admin: argparse.ArgumentParser) -> None:
    verbs = admin.add_subparsers(dest="admin_command", required=True)
    show = verbs.add_parser("show", help="one user's profile, memory size and live state")
    show.add_argument("user")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    verbs.add_parser("list", help="all profiles")
    history = verbs.add_parser(
        "history", help="one user's conversation (PII masked), summary and transitions"
    )
    history.add_argument("user")
    history.add_argument("--limit", type=int, default=20, help="last N messages (default 20)")
    history.add_argument("--json", action="store_true", help="machine-readable output")
    reset = verbs.add_parser("reset", help="reset a user's actor (leave degraded)")
    reset.add_argument("user")
    reset.add_argument(
        "--erase", action="store_true", help="also delete the profile and every stored event"
    )
    usage = verbs.add_parser(
        "usage", help="one user's token usage against the budgets (day, month, renewal)"
    )
    usage.add_argument("user")
    usage.add_argument("--reset", action="store_true", help="forget the counts: answers resume")
    usage.add_argument("--json", action="store_true", help="machine-readable output")
    update = verbs.add_parser("update", help="change profile fields")
    update.add_argument("user")
    update.add_argument("--persona")
    update.add_argument("--tone", choices=("witty", "formal", "casual"))
    update.add_argument("--language", choices=("ru", "en"))
    update.add_argument("--topics", help="comma-separated preferred topics ('' clears them)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `butler` console script."""
    args = _parser().parse_args(argv)
    # Imported after parsing: `--help` and `--version` need none of this.
    from adapters.bootstrap.settings import Settings, SettingsError
    from engine.errors import ButlerError, ConfigurationError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _say(exc)
        for warning in exc.warnings:
            print(f"butler: warning: {warning}", file=sys.stderr)
        return 2
    from adapters.bootstrap.wiring import tune_gc
    from adapters.observability import configure

    level = os.environ.get("BUTLER_LOG_LEVEL") and settings.log_level
    observed = configure(
        level=level or DEFAULT_LOG_LEVEL.get(args.command, settings.log_level),
        fmt=settings.log_format,
        salt=settings.log_salt,
        tracing=args.command in TRACED,
    )
    for warning in settings.warnings:
        print(f"butler: warning: {warning}", file=sys.stderr)
    tune_gc()
    command: Command = import_module(COMMANDS[args.command][0]).main
    try:
        return asyncio.run(command(settings, args))
    except ConfigurationError as exc:
        _say(exc)
        return 2
    except ButlerError as exc:
        print(f"butler: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        observed.shutdown()


def _say(problem: Exception) -> None:
    """One `butler:` line per problem (a SettingsError lists every bad variable)."""
    for line in str(problem).splitlines():
        print(f"butler: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
