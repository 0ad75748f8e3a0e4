"""Feeds Telegram updates to the aiogram dispatcher, as polling and the webhook share it:
repeats dropped, one user's updates in order, each confirmed only once it is safe to."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.types import Update

from adapters.telegram.intake import SeenUpdates
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.updates import Poisoned, update_kind, update_sender
from engine.errors import TransientError

log = logging.getLogger(__name__)

_TRANSIENT = (TransientError, TelegramNetworkError, TelegramServerError, TelegramRetryAfter)


@dataclass(slots=True)
class Intake:
    """Feeds updates to the dispatcher: deduplicated, ordered per user, confirmed when safe."""

    bot: Bot
    dispatcher: Dispatcher
    metrics: TelegramMetrics
    seen: SeenUpdates = field(default_factory=SeenUpdates)
    _locks: dict[int, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    """Per user: the lock and how many deliveries hold or wait for it (dropped at zero)."""

    async def handle(self, update: Update) -> bool:
        """Handle one update; False when it must come again (a transient failure)."""
        kind = update_kind(update)
        if self.seen.seen(update.update_id):
            self.metrics.update(kind, "duplicate")
            return True
        if kind == "unknown":
            # Nothing handles it; refusing it would make Telegram deliver it again for a day.
            log.warning("update of no known kind ignored: update_id=%s", update.update_id)
            self.metrics.update(kind, "ignored")
            self.seen.remember(update.update_id)
            return True
        try:
            await self.dispatcher.feed_update(self.bot, update)
        except _TRANSIENT as exc:
            log.warning("update deferred: %s", type(exc).__name__)
            self.metrics.update(kind, "deferred")
            return False
        except Exception as exc:  # noqa: BLE001 - logged below, then dropped
            # A bug or an update we cannot read: retrying would wedge every later update.
            # Exception messages may quote the update (message text), so only where it failed.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(  # noqa: TRY400 - no text in logs
                "update dropped after %s at %s:%s", type(exc).__name__, where.filename, where.lineno
            )
            self.metrics.update(kind, "failed")
        else:
            self.metrics.update(kind, "handled")
        self.seen.remember(update.update_id)
        return True

    def give_up(self, poisoned: Poisoned) -> None:
        """Count and log an update that cannot be read, once however often it comes."""
        if poisoned.update_id is not None:
            if self.seen.seen(poisoned.update_id):
                return
            self.seen.remember(poisoned.update_id)
        log.error("poisoned update skipped: update_id=%s, %s", poisoned.update_id, poisoned.why)
        self.metrics.update("unknown", "poisoned")

    async def handle_batch(
        self, updates: Sequence[Update], *, poisoned: Sequence[Poisoned] = ()
    ) -> tuple[int | None, bool]:
        """Handle a getUpdates batch; returns the offset that confirms what is safe to confirm
        (None: nothing) and whether something must come again. `poisoned` updates (of the
        same batch) are given up: counted, logged and confirmed with the rest."""
        for bad in poisoned:
            self.give_up(bad)
        chains: dict[int, list[Update]] = {}
        for update in updates:
            key = update_sender(update)
            chains.setdefault(key if key is not None else -update.update_id, []).append(update)
        done: dict[int, bool] = {}

        async def run(chain: list[Update]) -> None:
            for update in chain:
                ok = await self.handle(update)
                done[update.update_id] = ok
                if not ok:
                    return  # later updates of this user must wait for this one

        async with anyio.create_task_group() as group:
            for chain in chains.values():
                group.start_soon(run, chain)
        done.update((bad.update_id, True) for bad in poisoned if bad.update_id is not None)
        offset = None
        for update_id in sorted(done.keys() | {update.update_id for update in updates}):
            if not done.get(update_id, False):
                return offset, True
            offset = update_id + 1
        return offset, False

    async def handle_in_order(self, update: Update) -> bool:
        """Webhook path: one user's concurrent deliveries are handled one at a time."""
        key = update_sender(update)
        if key is None:
            return await self.handle(update)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self.handle(update)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
