"""The actor lifecycle as data: phases, triggers and the one transition table.

`actors.machine` builds this table into a `transitions` machine; `specs` renders it as a
Mermaid diagram and checks the reference model against it. Guards name boolean attributes of
the actor's state record, so a trigger's destination can depend on the breaker but never on I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """What a user's actor is doing right now."""

    IDLE = "idle"
    TRANSCRIBING = "transcribing"
    GENERATING = "generating"
    COMPRESSING = "compressing"
    DEGRADED = "degraded"


class Trigger(StrEnum):
    """Everything that can move an actor from one phase to another."""

    HEAR_TEXT = "hear_text"
    HEAR_VOICE = "hear_voice"
    TRANSCRIBED = "transcribed"
    TRANSCRIPTION_FAILED = "transcription_failed"
    REPLIED = "replied"
    LLM_UNAVAILABLE = "llm_unavailable"
    DECLINED = "declined"
    TURN_FAILED = "turn_failed"
    COMPRESS = "compress"
    COMPRESSED = "compressed"
    COMPRESSION_FAILED = "compression_failed"
    PROBE_SUCCEEDED = "probe_succeeded"
    RESET = "reset"


BREAKER_OPEN = "breaker_open"
"""Guard: the actor's circuit breaker is open (the language model was unreachable)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row: `trigger` moves `source` to `dest` when the guard holds (or does not, for
    `unless`)."""

    trigger: Trigger
    source: Phase
    dest: Phase
    guard: str = ""
    unless: str = ""


_I, _T, _G, _C, _D = (
    Phase.IDLE,
    Phase.TRANSCRIBING,
    Phase.GENERATING,
    Phase.COMPRESSING,
    Phase.DEGRADED,
)

TABLE: tuple[Transition, ...] = (
    # A turn starts. In degraded the generating phase decides: probe the LLM if the cool-down
    # has passed (half-open), otherwise answer with the canned in-persona reply.
    Transition(Trigger.HEAR_TEXT, _I, _G),
    Transition(Trigger.HEAR_TEXT, _D, _G),
    Transition(Trigger.HEAR_VOICE, _I, _T),
    Transition(Trigger.HEAR_VOICE, _D, _T),
    Transition(Trigger.TRANSCRIBED, _T, _G),
    Transition(Trigger.TRANSCRIPTION_FAILED, _T, _D, guard=BREAKER_OPEN),
    Transition(Trigger.TRANSCRIPTION_FAILED, _T, _I, unless=BREAKER_OPEN),
    # A turn ends: answered by the model, by the canned line (model unreachable), declined
    # without asking the model (a message too long), or failed (a bug or a dead store).
    Transition(Trigger.REPLIED, _G, _I),
    Transition(Trigger.LLM_UNAVAILABLE, _G, _D),
    Transition(Trigger.DECLINED, _G, _D, guard=BREAKER_OPEN),
    Transition(Trigger.DECLINED, _G, _I, unless=BREAKER_OPEN),
    Transition(Trigger.TURN_FAILED, _G, _D, guard=BREAKER_OPEN),
    Transition(Trigger.TURN_FAILED, _G, _I, unless=BREAKER_OPEN),
    Transition(Trigger.TURN_FAILED, _T, _D, guard=BREAKER_OPEN),
    Transition(Trigger.TURN_FAILED, _T, _I, unless=BREAKER_OPEN),
    # Memory compression runs between turns, from idle only.
    Transition(Trigger.COMPRESS, _I, _C),
    Transition(Trigger.COMPRESSED, _C, _I),
    Transition(Trigger.COMPRESSION_FAILED, _C, _I),
    # Recovery: a background half-open probe succeeded, or an operator reset the actor.
    Transition(Trigger.PROBE_SUCCEEDED, _D, _I),
    Transition(Trigger.RESET, _I, _I),
    Transition(Trigger.RESET, _D, _I),
)

INITIAL = Phase.IDLE

RESTING_PHASES = frozenset({Phase.IDLE, Phase.DEGRADED})
"""Phases in which an actor waits for its next message."""


def allowed(trigger: Trigger, source: Phase) -> tuple[Transition, ...]:
    """The rows `trigger` may take from `source` (empty: firing it there is a bug)."""
    return tuple(t for t in TABLE if t.trigger is trigger and t.source is source)
