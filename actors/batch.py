"""One turn for several messages: lines a user writes in one breath, and messages over the
user's rate, are answered together.

A text message that finds the actor idle opens a window of `coalesce_s`: text messages
accepted within it join its turn. A message over the rate (`HandleText.joins`) joins the turn
ahead of it whenever it arrives, so a forwarded batch of twelve costs the model one call for
what came over the rate, and nothing the user wrote is dropped. A voice note, a command, a
message recovered from the store (written long before, answered on its own) or a text
arriving after the window ends the batch and waits for its own turn.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from actors.envelope import Envelope
from actors.observe import MessagesJoined
from engine.messages import HandleText

if TYPE_CHECKING:
    from actors.user_actor import UserActor


async def gather(actor: UserActor, first: Envelope) -> Envelope:
    """`first`, or one envelope answering `first` and the stored text messages that join it.

    Waits (at most until the window closes) for messages of the window still on their way,
    and for the store writes of those that join, so the batch holds only stored messages.
    """
    if not isinstance(first.command, HandleText):
        return first
    clock = actor.deps.clock
    window = actor.deps.settings.coalesce_s
    # Idle when it came: accepted after the last turn ended (or at activation).
    closes = (
        first.accepted_at + window if window > 0 and first.accepted_at >= actor.last_active else 0.0
    )
    batch = [first]
    while not actor.stopped():
        waiting = actor.mailbox.peek()
        if waiting is None:
            left = closes - clock.monotonic()
            if left <= 0:
                break
            await actor.mailbox.wait(left)
            if actor.mailbox.peek() is None:
                break  # the window passed (or the actor was woken to stop)
            continue
        command = waiting.command
        if (
            not isinstance(command, HandleText)
            or waiting.recovered
            or not (command.joins or waiting.accepted_at <= closes)
        ):
            break
        batch.append(actor.mailbox.take_now())
    if len(batch) == 1:
        return first
    stored = [e for e in batch if e.persisted is None or await e.persisted]
    if len(stored) <= 1:
        return stored[0] if stored else first  # `handle` sees the failed write and skips it
    events = [e.command.event for e in stored if isinstance(e.command, HandleText)]
    over_rate = sum(1 for e in stored[1:] if isinstance(e.command, HandleText) and e.command.joins)
    actor.deps.observer.record(MessagesJoined(len(stored) - 1 - over_rate, over_rate))
    last = stored[-1].command
    assert isinstance(last, HandleText)
    command = replace(last, event=events[-1], earlier=tuple(events[:-1]), joins=False)
    return Envelope(command, first.context, first.accepted_at)
