"""What travels through a mailbox: a command with its trace context and timing, and the
envelopes made again for messages found unanswered in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context

from engine.domain import MemoryEvent
from engine.errors import ShuttingDown
from engine.messages import Command, HandleText, HandleVoice, UserMessage

if TYPE_CHECKING:
    from actors.user_actor import UserActor


@dataclass(frozen=True, slots=True)
class Envelope:
    """A command plus the caller's trace context and when it was accepted.

    `persisted` resolves True once the caller's store write committed (False if it failed);
    recovered messages, already stored, carry None.
    """

    command: Command
    context: Context | None
    accepted_at: float
    persisted: asyncio.Future[bool] | None = None
    done: asyncio.Future[Exception | None] | None = None
    """Resolved when the command was handled: None, or the error it ended with."""
    recovered: bool = False
    """Found owed in the store (a restart, an outage): answered on its own, never coalesced."""

    @property
    def event_id(self) -> str:
        cmd = self.command
        return cmd.event.id if isinstance(cmd, HandleText | HandleVoice) else ""


Handler = Callable[["UserActor", Any, Envelope], Awaitable[None]]
"""A command's handler: the actor, the command, its envelope."""


def recovered(event: MemoryEvent, now: float) -> Envelope:
    """An envelope for a stored message still owed a reply (after a restart or outage)."""
    command: UserMessage
    if event.source == "voice" and not event.content:
        command = HandleVoice(event, b"")  # the audio did not survive; ask for it again
    else:
        command = HandleText(event)
    return Envelope(command, None, now, recovered=True)


def abandon(envelopes: Iterable[Envelope]) -> None:
    """Tell whoever waits on one of `envelopes` that its actor stopped before handling it.

    Their `ask` raises `ShuttingDown`; messages stay stored and are answered after the next
    start (or erased with the user).
    """
    for envelope in envelopes:
        done = envelope.done
        if done is not None and not done.done():
            done.set_exception(ShuttingDown("the actor stopped before handling the command"))
            done.exception()  # retrieved: a waiter that gave up leaves no warning behind


async def settled(envelopes: Iterable[Envelope]) -> None:
    """Wait until the store write of each of `envelopes` has finished, whichever way."""
    for envelope in list(envelopes):
        if envelope.persisted is not None:
            await envelope.persisted
