"""Shows "typing…" in a chat while its messages wait for replies, inside the Bot API budgets.

The budgets are the outbox's (`Outbox.offer`): an action goes only into a free slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

from aiogram.enums import ChatAction
from aiogram.methods import SendChatAction

from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.outbound import Outbox


class Typing:
    """Shows "typing…" in a chat while any of its messages waits for a reply.

    Telegram shows a chat action for about five seconds, so it is refreshed every
    `interval_s` until the last pending message of the chat is answered, or `max_s` passes.
    One action per chat per refresh, through `Outbox.offer`: when the budgets have no free
    slot it looks again when one may be free (at least `retry_s` later), or skips it.
    """

    def __init__(
        self,
        outbox: Outbox,
        metrics: TelegramMetrics,
        *,
        interval_s: float = 4.5,
        max_s: float = 600.0,
        retry_s: float = 0.02,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._interval_s = interval_s
        self._max_s = max_s
        self._retry_s = retry_s
        self._pending: dict[int, set[Hashable]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def begin(self, chat_id: int, key: Hashable, *, arrived: float | None = None) -> None:
        """A message (`key`) of the chat now waits for a reply."""
        self._pending.setdefault(chat_id, set()).add(key)
        if chat_id not in self._tasks:
            task = asyncio.create_task(self._show(chat_id, arrived), name=f"typing:{chat_id}")
            self._tasks[chat_id] = task
            task.add_done_callback(lambda _: self._ended(chat_id, task))

    def end(self, chat_id: int, key: Hashable) -> None:
        """A reply to message `key` came. A reply to an event id answers that message and
        every earlier one of the chat (a batch answered as one turn): ids sort by time."""
        keys = self._pending.get(chat_id)
        if keys is None:
            return
        if isinstance(key, str):
            keys.difference_update([k for k in keys if isinstance(k, str) and k <= key])
        keys.discard(key)
        if not keys:
            self.forget(chat_id)

    def forget(self, chat_id: int) -> None:
        self._pending.pop(chat_id, None)
        task = self._tasks.pop(chat_id, None)
        if task is not None:
            task.cancel()

    def active(self, chat_id: int) -> bool:
        return chat_id in self._tasks

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for chat_id in list(self._tasks):
            self.forget(chat_id)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, chat_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(chat_id) is task:
            del self._tasks[chat_id]
            self._pending.pop(chat_id, None)

    async def _show(self, chat_id: int, arrived: float | None) -> None:
        started = time.monotonic()
        action = SendChatAction(chat_id=chat_id, action=ChatAction.TYPING)
        first = True
        while time.monotonic() - started < self._max_s:
            wait = await self._outbox.offer(chat_id, action, refresh_s=self._interval_s)
            if wait == 0:
                if first and arrived is not None:
                    self._metrics.typing_delay(time.monotonic() - arrived)
                first = False
                wait = self._interval_s
            # The refresh period, or until a slot may be free: a chat action waits on time.
            await asyncio.sleep(max(wait, self._retry_s))  # noqa: TID251
