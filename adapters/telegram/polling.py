"""Long polling of the Bot API: our own loop, so an update is confirmed (by the next
getUpdates offset) only after its handler returned; aiogram's moves past a failed one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from aiogram.exceptions import TelegramConflictError, TelegramUnauthorizedError

from adapters.telegram.dispatch import Intake
from adapters.telegram.updates import ALLOWED_UPDATES, RawGetUpdates, read_batch
from engine.errors import ButlerError

log = logging.getLogger(__name__)


class TelegramUnavailable(ButlerError):
    """The bot cannot start: no token, a refused token, or another instance polling."""


async def poll(
    intake: Intake,
    stop: asyncio.Event,
    *,
    timeout_s: int,
    backoff: Callable[[int], float] = lambda n: min(30.0, 0.5 * 2**n),
) -> None:
    """Long-poll until `stop`; confirm the last handled batch before returning."""
    bot = intake.bot
    offset: int | None = None
    failures = 0
    try:
        while not stop.is_set():
            request = RawGetUpdates(
                offset=offset, timeout=timeout_s, allowed_updates=ALLOWED_UPDATES
            )
            fetched = await _unless_stopped(bot(request, request_timeout=timeout_s + 15), stop)
            if fetched is None:
                return
            kind, value = fetched
            if kind == "error":
                assert isinstance(value, BaseException)
                if isinstance(value, TelegramUnauthorizedError):
                    raise TelegramUnavailable("Telegram refused BUTLER_TELEGRAM_TOKEN") from value
                if isinstance(value, TelegramConflictError):
                    raise TelegramUnavailable(
                        "another process polls this bot (or a webhook is set): stop it first"
                    ) from value
                log.warning("getUpdates failed: %s", type(value).__name__)
                failures += 1
                await _wait(stop, backoff(failures))
                continue
            assert isinstance(value, list)
            if not value:
                failures = 0
                continue
            batch = read_batch(value, bot)
            confirmed, retry = await intake.handle_batch(batch.updates, poisoned=batch.poisoned)
            if confirmed is not None:
                offset = confirmed
            if retry:
                failures += 1
                await _wait(stop, backoff(failures))
            else:
                failures = 0
    finally:
        if offset is not None:
            # Confirm the last batch now: otherwise it would come again after a restart.
            with suppress(Exception):
                await bot(RawGetUpdates(offset=offset, timeout=0, limit=1))


async def _unless_stopped(call: Awaitable[Any], stop: asyncio.Event) -> tuple[str, object] | None:
    """Run `call` unless `stop` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(call)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        return None
    exc = task.exception()
    return ("error", exc) if exc is not None else ("ok", task.result())


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stop.wait()
