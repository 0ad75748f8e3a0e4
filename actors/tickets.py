"""What the registry answers: a ticket for each message told, and the view of a live actor
that operators see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.lifecycle import RESTING_PHASES

if TYPE_CHECKING:
    from actors.user_actor import UserActor


@dataclass(frozen=True, slots=True)
class Accepted:
    """The message is stored and queued; its reply will reach the sink."""

    event_id: str


@dataclass(frozen=True, slots=True)
class HandedOver(Accepted):
    """The message is stored and handed to the process that serves the user: the reply comes
    from there (a front door shows no typing for it here)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The mailbox was full; nothing was stored. `reply` is the butler's answer to send."""

    reply: str


@dataclass(frozen=True, slots=True)
class Repeated:
    """The message was stored before (the same update delivered again): nothing new was
    stored or queued; `event_id` is the stored one. Confirm it and do nothing else."""

    event_id: str


Ticket = Accepted | Rejected | Repeated


@dataclass(frozen=True, slots=True)
class ActorView:
    """A live actor as operators see it."""

    user_id: str
    state: str
    mailbox_depth: int
    turn_age_s: float | None
    idle_s: float
    last_transition: tuple[float, str, str, str] | None
    transitions: int
    messages: int = 0
    messages_per_hour: float = 0.0
    budget_level: str | None = None
    """The token budget level of the last turn (normal, reduced, exhausted); None: no limit."""


def view_of(actor: UserActor, now: float) -> ActorView:
    """The operators' view of a live actor at monotonic time `now`."""
    a = actor
    return ActorView(
        user_id=a.user_id,
        state=a.state,
        mailbox_depth=len(a.mailbox),
        turn_age_s=None if a.phase in RESTING_PHASES else now - a.turn_started,
        idle_s=now - a.last_active,
        last_transition=a.last_transition,
        transitions=a.transitions,
        messages=a.messages,
        messages_per_hour=a.messages_per_hour(now),
        budget_level=None if a.budget is None else a.budget.level,
    )
