"""Commands an actor accepts through its mailbox (imperative) and what its turns produce."""

from __future__ import annotations

from dataclasses import dataclass

from engine.domain import MemoryEvent


@dataclass(frozen=True, slots=True)
class HandleText:
    """Answer a stored user message."""

    event: MemoryEvent


@dataclass(frozen=True, slots=True)
class HandleVoice:
    """Transcribe a voice note into its stored (still empty) user event, then answer it.

    Empty `audio` means the recording was lost (a restart before transcription): the user is
    asked to send it again.
    """

    event: MemoryEvent
    audio: bytes


@dataclass(frozen=True, slots=True)
class CompressMemory:
    """Fold old events into the summary now, if the policy allows.

    `eager` (the background worker, for idle users) folds whatever lies beyond the kept tail
    even when the user is not over the threshold.
    """

    eager: bool = False


@dataclass(frozen=True, slots=True)
class ResetActor:
    """Leave degraded, forget the breaker and backoff (an operator's reset)."""


Command = HandleText | HandleVoice | CompressMemory | ResetActor
UserMessage = HandleText | HandleVoice
