"""An event loop whose time is a `ManualClock`, for tests that must see timers fire.

`loop.call_later` (the mailbox's timeout, `asyncio.timeout`, anyio deadlines) then runs on the
test's clock: a timer fires when the test advances the clock past it, never by itself. The
loop also knows when it is quiet (nothing ready, only timers or futures left), so a test can
run "until every task waits" without sleeping, and a wait that nothing can end fails at once.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.fakes import ManualClock

T = TypeVar("T")


class Stuck(AssertionError):
    """The awaited work cannot finish: every task waits and only the clock could help."""


class _QuietSelector(selectors.DefaultSelector):
    """Calls `on_quiet` instead of blocking: the loop asks to block only when nothing is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.on_quiet: list[asyncio.Future[None]] = []
        self.main: asyncio.Future[Any] | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None or timeout > 0:
            if self.on_quiet:
                waiters, self.on_quiet = self.on_quiet, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            elif self.main is not None and not self.main.done():
                self.main.cancel(Stuck.__name__)  # nothing can run until the clock moves
            timeout = 0
        return super().select(timeout)


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector loop on `clock.monotonic()`; `run` and `quiesce` drive it from a test."""

    def __init__(self, clock: ManualClock) -> None:
        self._selector_hook = _QuietSelector()
        super().__init__(self._selector_hook)
        self.clock = clock

    def time(self) -> float:
        return self.clock.mono

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to its end; raises `Stuck` if it waits for something that cannot come."""
        name = getattr(coro, "__qualname__", "the coroutine")
        task = self.create_task(coro)
        self._selector_hook.main = task
        try:
            return self.run_until_complete(task)
        except asyncio.CancelledError as exc:
            raise Stuck(f"{name} waits for what cannot happen") from exc
        finally:
            self._selector_hook.main = None

    def quiesce(self) -> None:
        """Run every task until each one waits (on a timer in the future, or a future)."""

        async def quiet() -> None:
            waiter: asyncio.Future[None] = self.create_future()
            self._selector_hook.on_quiet.append(waiter)
            await waiter

        self.run(quiet())

    def advance(self, seconds: float) -> None:
        """Move the clock, then let every timer now due fire and every task settle."""
        self.clock.advance(seconds)
        self.quiesce()
