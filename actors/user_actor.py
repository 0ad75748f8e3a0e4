"""One user's actor: a task that takes envelopes from its mailbox in order and runs them.

This module holds the state and the loop; what a turn does lives in `turns`, the traced port
calls in `port_calls`, compaction in `compaction`, recovery from outages in `recovery` and
the delivery of replies in `outbox`. I/O happens between triggers; the lifecycle callbacks
only record. `handle` holds the one broad `except` of the actor: whatever a message does, the
user is answered, the error is recorded and the actor settles in `idle` or `degraded`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from actors import batch, outbox, recovery, turns
from actors.deps import ActorDeps
from actors.envelope import Envelope
from actors.history import HISTORY_SIZE, TransitionRecord
from actors.mailbox import Mailbox
from actors.observe import TransitionMade
from engine.budget import BudgetState, Usage
from engine.compression import Backoff
from engine.domain import Language, MemoryEvent
from engine.lifecycle import Phase, Trigger
from engine.messages import HandleText, HandleVoice

log = logging.getLogger(__name__)

current_user: ContextVar[str] = ContextVar("butler_current_user", default="")
"""The user whose actor runs in this task; log formatters hash it (never log it raw)."""


class UserActor:
    """The state owner for one user; only its own task touches it after creation."""

    __slots__ = (
        "_history",
        "_hour",
        "_hour_messages",
        "_prev_hour_messages",
        "backoff",
        "breaker",
        "budget",
        "delivery_owed",
        "delivery_retry_at",
        "delivery_retry_s",
        "deps",
        "done",
        "language",
        "last_active",
        "lease_lost",
        "mailbox",
        "messages",
        "owed",
        "owed_earlier",
        "profile_known",
        "retired",
        "state",
        "stopping",
        "store_retry_at",
        "store_retry_s",
        "transitions",
        "turn_started",
        "usage",
        "user_id",
    )

    def __init__(self, user_id: str, deps: ActorDeps, *, language: Language = "ru") -> None:
        s = deps.settings
        self.user_id = user_id
        self.deps = deps
        self.state: str = Phase.IDLE.value
        self.mailbox: Mailbox[Envelope] = Mailbox(s.mailbox_capacity)
        self.breaker = s.new_breaker()
        self.backoff = Backoff(deps.policy.retry_base_s, deps.policy.retry_max_s)
        self.language: Language = language
        self.profile_known = False
        self.stopping = False
        self.retired = False
        self.lease_lost = False
        """Another process serves the user now: this actor stopped without writing more."""
        self.done = asyncio.Event()  # set when the loop has exited, however it exited
        now = deps.clock.monotonic()
        self.last_active = now
        self.turn_started = 0.0
        self._history: list[TransitionRecord] = []  # a ring: a deque costs ~600 B empty
        self.transitions = 0
        self.messages = 0
        self._hour = 0
        self._hour_messages = 0
        self._prev_hour_messages = 0
        self.owed: MemoryEvent | None = None
        self.owed_earlier: tuple[MemoryEvent, ...] = ()
        """The messages answered with `owed` in one turn (a coalesced or over-rate batch)."""
        self.store_retry_at = 0.0
        self.store_retry_s = 0.0
        self.delivery_owed = False
        """Stored replies wait for the front door (a failed send, or found at activation)."""
        self.delivery_retry_at = 0.0
        self.delivery_retry_s = 0.0
        self.usage: Usage | None = None
        """Tokens spent as of the last turn (None: no budget, or no turn yet)."""
        self.budget: BudgetState | None = None
        """The budget level of the last turn, for the gauge of users over a budget."""

    @property
    def breaker_open(self) -> bool:
        """Guard of the lifecycle table."""
        return self.breaker.open

    @property
    def phase(self) -> Phase:
        return Phase(self.state)

    @property
    def history(self) -> list[TransitionRecord]:
        """The last `HISTORY_SIZE` transitions, oldest first."""
        ring = self._history
        start = self.transitions % HISTORY_SIZE if len(ring) == HISTORY_SIZE else 0
        return ring[start:] + ring[:start]

    @property
    def last_transition(self) -> tuple[float, str, str, str] | None:
        """(monotonic time, from, to, trigger) of the newest transition."""
        if not self._history:
            return None
        r = self._history[(self.transitions - 1) % HISTORY_SIZE]
        return (r.at, r.source.value, r.dest.value, r.trigger.value)

    def on_transition(self, source: Phase, dest: Phase, trigger: Trigger) -> None:
        """Lifecycle callback: record only (history, a span event, an observation)."""
        deps = self.deps
        span = trace.get_current_span()
        record = TransitionRecord(
            self.user_id,
            deps.clock.monotonic(),
            source,
            dest,
            trigger,
            span.get_span_context().trace_id,
        )
        ring = self._history
        if len(ring) < HISTORY_SIZE:
            ring.append(record)
        else:
            ring[self.transitions % HISTORY_SIZE] = record
        self.transitions += 1
        span.add_event(
            "transition", {"from": source.value, "to": dest.value, "trigger": trigger.value}
        )
        deps.observer.record(TransitionMade(source, dest, trigger))
        if deps.feed:
            deps.feed.publish(record)

    def note_message(self, now: float) -> None:
        """Count an accepted message (hourly windows feed the busiest-user gauge)."""
        self.messages += 1
        hour = int(now // 3600)
        if hour != self._hour:
            self._prev_hour_messages = self._hour_messages if hour == self._hour + 1 else 0
            self._hour, self._hour_messages = hour, 0
        self._hour_messages += 1

    def messages_per_hour(self, now: float) -> float:
        """Messages accepted in the trailing hour, estimated from two hourly windows."""
        hour = int(now // 3600)
        left = 1.0 - (now % 3600) / 3600
        if hour == self._hour:
            return self._hour_messages + self._prev_hour_messages * left
        if hour == self._hour + 1:
            return self._hour_messages * left
        return 0.0

    def fire(self, trigger: Trigger) -> None:
        self.deps.lifecycle.fire(self, trigger)

    def stopped(self) -> bool:
        return self.stopping  # a call, so type narrowing does not outlive an await

    def stop(self) -> None:
        """Finish the envelope in hand, then exit; waiting messages stay stored, unanswered,
        and stay in the mailbox for the registry to settle (`envelope.abandon`)."""
        self.stopping = True
        self.mailbox.wake()

    async def run(self, retire: Callable[[UserActor], bool]) -> None:
        """Process envelopes until stopped or idle for longer than the idle timeout."""
        clock = self.deps.clock
        current_user.set(self.user_id)  # this task's context only
        if self.delivery_owed:  # replies stored before a crash or an outage go out first
            await outbox.deliver_owed(self)
        while not self.stopped():
            envelope = await self.mailbox.take(self.wait_s(clock.monotonic()))
            if self.stopped():
                if envelope is not None:  # back in line: its store write may still be running
                    self.mailbox.push_front(envelope)
                return
            if envelope is not None:
                await self.handle(await batch.gather(self, envelope))
                envelope = None  # an idle actor holds no message text
                self.last_active = clock.monotonic()
                continue
            now = clock.monotonic()
            if self.store_retry_at and now >= self.store_retry_at:
                await recovery.recover_from_store(self)
            elif self.delivery_retry_at and now >= self.delivery_retry_at:
                await outbox.deliver_owed(self)
            elif self.breaker.seconds_until_probe(now) == 0.0:
                await recovery.probe(self)
            elif now - self.last_active >= self.deps.settings.idle_timeout_s and retire(self):
                return

    def wait_s(self, now: float) -> float:
        waits = [self.last_active + self.deps.settings.idle_timeout_s - now]
        if self.store_retry_at:
            waits.append(self.store_retry_at - now)
        if self.delivery_retry_at:
            waits.append(self.delivery_retry_at - now)
        probe = self.breaker.seconds_until_probe(now)
        if probe is not None and self.phase is Phase.DEGRADED:
            waits.append(probe)
        return max(0.0, min(waits))

    async def handle(self, envelope: Envelope) -> None:
        if envelope.persisted is not None and not await envelope.persisted:
            return  # the caller's store write failed; the caller was told, nothing to answer
        if self.store_retry_at and isinstance(envelope.command, HandleText | HandleVoice):
            return  # stored but the store is down: the recovery sweep will bring it back
        token = otel_context.attach(envelope.context) if envelope.context is not None else None
        try:
            with self.deps.tracer.start_as_current_span("butler.turn") as span:
                span.set_attribute("butler.command", type(envelope.command).__name__)
                handler = turns.HANDLERS[type(envelope.command)]
                try:
                    await handler(self, envelope.command, envelope)
                except Exception as exc:  # noqa: BLE001 - the one broad except: answer, settle
                    if envelope.done is not None:
                        envelope.done.set_result(exc)
                    span.record_exception(exc)
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    try:
                        await turns.crashed(self, exc, envelope)
                    except Exception:  # even the apology failed (sink down): keep the actor
                        log.exception("could not answer after a failed turn")
        finally:
            if token is not None:
                otel_context.detach(token)
            self.owed = None
            self.owed_earlier = ()
            if envelope.done is not None and not envelope.done.done():
                envelope.done.set_result(None)
