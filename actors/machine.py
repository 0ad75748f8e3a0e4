"""The `transitions` binding of `engine.lifecycle.TABLE`, shared by every actor.

One `transitions.Machine` is built once per process with `model=None`; each trigger is fired
through the machine's event objects on the actor's small state record, so actors pay neither
the ~16 KB and ~0.4 ms of a machine each nor the O(n) `add_model`/`remove_model` of a shared
machine that binds methods onto every model (see docs/decisions.md, "State machine binding").
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from transitions import Machine, MachineError

from engine.errors import IllegalTransition
from engine.lifecycle import INITIAL, TABLE, Phase, Transition, Trigger

# `transitions` logs every callback at INFO; the actors record transitions themselves.
logging.getLogger("transitions").setLevel(logging.WARNING)


class Record(Protocol):
    """What the machine needs of an actor: its state, the guard, a transition listener."""

    state: str

    @property
    def breaker_open(self) -> bool: ...

    def on_transition(self, source: Phase, dest: Phase, trigger: Trigger) -> None: ...


def _row(t: Transition) -> dict[str, Any]:
    row: dict[str, Any] = {"trigger": t.trigger.value, "source": t.source.value}
    row["dest"] = t.dest.value
    if t.guard:
        row["conditions"] = [t.guard]
    if t.unless:
        row["unless"] = [t.unless]
    return row


def _after(event: Any) -> None:
    model = event.model
    model.on_transition(
        Phase(event.transition.source),
        Phase(event.transition.dest),
        Trigger(event.event.name),
    )


class Lifecycle:
    """Fires triggers of the lifecycle table on actor records; an illegal trigger raises."""

    __slots__ = ("_events", "_machine")

    def __init__(self, table: tuple[Transition, ...] = TABLE) -> None:
        self._machine = Machine(
            model=None,
            states=[p.value for p in Phase],
            initial=INITIAL.value,
            transitions=[_row(t) for t in table],
            auto_transitions=False,
            send_event=True,
            after_state_change=_after,
        )
        self._events = {Trigger(name): ev for name, ev in self._machine.events.items()}

    def fire(self, record: Record, trigger: Trigger) -> Phase:
        """Move `record` by `trigger` and return the new phase.

        Raises:
            IllegalTransition: no row of the table allows `trigger` from the current phase.
        """
        source = record.state
        try:
            moved = self._events[trigger].trigger(record)
        except MachineError as exc:
            raise IllegalTransition(f"{trigger} from {source}") from exc
        if not moved:
            raise IllegalTransition(f"{trigger} from {source}: no guard held")
        return Phase(record.state)
