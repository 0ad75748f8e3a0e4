"""What actors report for metrics: small frozen records handed to one `Observer` method.

The telemetry adapter dispatches them by type onto Prometheus instruments; tests may collect
them. Records carry no message text and no user id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.domain import Role, Source
from engine.lifecycle import Phase, Trigger


@dataclass(frozen=True, slots=True)
class TransitionMade:
    source: Phase
    dest: Phase
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class TurnFinished:
    """`status` is one of ok, degraded, declined, error, voice_rejected."""

    source: Source
    status: str
    latency_s: float
    service_s: float


@dataclass(frozen=True, slots=True)
class PromptBuilt:
    tokens: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class EventsStored:
    roles: tuple[Role, ...]


@dataclass(frozen=True, slots=True)
class ProfileAccessed:
    """A profile read (with the read's duration) or write."""

    write: bool
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LLMCalled:
    """`status`: ok, unavailable or rejected; `endpoint` > 0 means a fallback answered."""

    purpose: str
    status: str
    endpoint: int
    seconds: float
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class CacheLooked:
    """A response-cache lookup for a model call of `purpose`."""

    purpose: str
    hit: bool


@dataclass(frozen=True, slots=True)
class CompressionFinished:
    """`status`: ok or error; `reason` says why it failed (empty on success)."""

    status: str
    seconds: float
    events_deleted: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MessagesJoined:
    """Messages answered within another's turn: `coalesced` came within its window,
    `over_rate` came over the user's rate."""

    coalesced: int
    over_rate: int


@dataclass(frozen=True, slots=True)
class BudgetApplied:
    """A turn started over 80 % of a token budget: `level` reduced (a brief prompt) or
    exhausted (no model call, the budget line)."""

    level: str


@dataclass(frozen=True, slots=True)
class MailboxRejected:
    pass


@dataclass(frozen=True, slots=True)
class ActorCrashed:
    pass


@dataclass(frozen=True, slots=True)
class LeasesRenewed:
    """One renewal round: claims renewed, claims found lost, claims the store could not renew."""

    renewed: int
    lost: int
    failed: int


@dataclass(frozen=True, slots=True)
class LeaseTakenOver:
    """A claim took a user from another process whose lease had expired unreleased."""


@dataclass(frozen=True, slots=True)
class OwnershipLost:
    """A live actor's claim was lost (another process took the user): it stopped."""


@dataclass(frozen=True, slots=True)
class ClaimRefused:
    """A claim met another process serving the user (`handed_over`: the message went to it)."""

    handed_over: bool


Observation = (
    TransitionMade
    | TurnFinished
    | PromptBuilt
    | EventsStored
    | ProfileAccessed
    | LLMCalled
    | CacheLooked
    | CompressionFinished
    | MessagesJoined
    | BudgetApplied
    | MailboxRejected
    | ActorCrashed
    | LeasesRenewed
    | LeaseTakenOver
    | OwnershipLost
    | ClaimRefused
)


class Observer(Protocol):
    """Receives observations; must not block or raise."""

    def record(self, observation: Observation) -> None: ...
