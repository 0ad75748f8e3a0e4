"""The one error tree of Butler. Adapters map third-party exceptions onto it at their edge.

ButlerError
├── ConfigurationError        a setting holds a value Butler cannot use (exit code 2)
├── TransientError            retrying later may succeed
│   ├── StoreUnavailable      database unreachable, locked, timed out
│   ├── LLMUnavailable        every endpoint of the chain failed (actor goes degraded)
│   ├── TranscriberBusy       no worker free in time
│   ├── SummaryRejected       the model's summary was empty, too long or in the wrong language
│   ├── DeliveryFailed        the front door could not hand a reply over (it stays owed)
│   ├── ShuttingDown          the service stopped taking messages; the sender may retry
│   ├── OwnedElsewhere        another process holds the lease on this key (until it expires)
│   └── BrokerUnavailable     the message broker did not confirm a publish or a read in time
└── PermanentError            retrying the same input fails the same way
    ├── StoreCorrupted        schema or data the store cannot read
    ├── DuplicateMessage      a message with this origin is stored already (answered once)
    ├── LLMRejected           the server refused the request (4xx other than 408/429)
    ├── BadAudio              audio that cannot be decoded, is silent or too long
    ├── MessageTooLong        the user's message alone exceeds its prompt budget
    ├── IllegalTransition     a lifecycle trigger fired from a state that forbids it (a bug)
    └── LeaseLost             this lease's key has another holder now: write nothing for it
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal


class ButlerError(Exception):
    """Root of every error Butler raises on purpose."""


class ConfigurationError(ButlerError):
    """A setting (an environment variable, a model path, an address) cannot be used.

    Raised at start, before anything is served; the command line prints it as one line and
    exits with code 2.
    """


class TransientError(ButlerError):
    """The operation may succeed if tried again later."""


class PermanentError(ButlerError):
    """The operation will fail again with the same input."""


class StoreUnavailable(TransientError):
    """The store cannot be reached or did not answer in time."""


class BrokerUnavailable(TransientError):
    """The message broker (NATS JetStream) did not confirm in time, or cannot be reached."""


class LLMUnavailable(TransientError):
    """No endpoint of the language-model chain produced a completion."""


class TranscriberBusy(TransientError):
    """Transcription capacity was exhausted for longer than the caller may wait."""


class SummaryRejected(TransientError):
    """A compression summary failed its checks; the raw events stay and it is retried later."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"summary rejected: {reason}")
        self.reason = reason


class ShuttingDown(TransientError):
    """The registry is draining and accepts no new messages."""


class StoreCorrupted(PermanentError):
    """The store holds data it cannot interpret."""


class DuplicateMessage(PermanentError):
    """A user message whose `origin` is stored already: this delivery is a repeat."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"the message is stored already as {event_id}")
        self.event_id = event_id


class DeliveryFailed(TransientError):
    """The front door could not hand a reply over now; it stays owed and is sent later."""


class LLMRejected(PermanentError):
    """The language model refused the request itself (bad request, auth, unknown model)."""


AudioProblem = Literal["empty", "corrupt", "cut_short", "silent", "unclear", "too_long", "lost"]


class BadAudio(PermanentError):
    """Audio that cannot be decoded, holds no speech, or is longer than allowed.

    `problem` names what was wrong, so the butler can say it in the user's language (the
    message is for logs).
    """

    def __init__(self, message: str, problem: AudioProblem = "corrupt") -> None:
        super().__init__(message)
        self.problem: AudioProblem = problem


class MessageTooLong(PermanentError):
    """The user's new message alone does not fit its token budget."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"message needs {tokens} tokens, budget is {budget}")
        self.tokens = tokens
        self.budget = budget


class IllegalTransition(PermanentError):
    """A trigger was fired from a state whose row in the table does not allow it."""


class OwnedElsewhere(TransientError):
    """Another owner holds the lease on `key` until `expires_at` (then it may be taken);
    `token` is that lease's fencing token (0 when unknown)."""

    def __init__(self, key: str, *, owner: str, expires_at: datetime, token: int = 0) -> None:
        super().__init__(f"{key} is held by {owner} until {expires_at.isoformat()}")
        self.key = key
        self.owner = owner
        self.expires_at = expires_at
        self.token = token


class LeaseLost(PermanentError):
    """The lease on `key` is no longer this holder's (taken over or released): a write under
    it was refused and nothing was written; the holder must stop acting for the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the lease on {key} was lost")
        self.key = key
