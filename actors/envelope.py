"""What travels through a mailbox: a command with its trace context and timing, and the
envelopes made again for messages found unanswered in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context

from engine.domain import MemoryEvent
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
    return Envelope(command, None, now)
