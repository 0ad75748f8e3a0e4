"""The `transitions` binding fires exactly the rows of the lifecycle table, and nothing else."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from actors.machine import Lifecycle
from engine.errors import IllegalTransition, PermanentError
from engine.lifecycle import BREAKER_OPEN, INITIAL, TABLE, Phase, Transition, Trigger, allowed

MACHINE = Lifecycle()


@dataclass
class Rec:
    """The smallest actor state record the machine accepts."""

    state: str = INITIAL.value
    breaker_open: bool = False
    seen: list[tuple[Phase, Phase, Trigger]] = field(default_factory=list)

    def on_transition(self, source: Phase, dest: Phase, trigger: Trigger) -> None:
        self.seen.append((source, dest, trigger))


def guard_value(row: Transition) -> bool:
    if row.guard:
        assert row.guard == BREAKER_OPEN
        return True
    if row.unless:
        assert row.unless == BREAKER_OPEN
        return False
    return False


def row_id(row: Transition) -> str:
    guard = f"[{row.guard}]" if row.guard else f"[not {row.unless}]" if row.unless else ""
    return f"{row.trigger}:{row.source}->{row.dest}{guard}"


@pytest.mark.parametrize("row", TABLE, ids=row_id)
def test_every_row_fires_from_its_source_to_its_dest(row: Transition) -> None:
    rec = Rec(state=row.source.value, breaker_open=guard_value(row))
    assert MACHINE.fire(rec, row.trigger) is row.dest
    assert rec.state == row.dest.value
    assert rec.seen == [(row.source, row.dest, row.trigger)]


@pytest.mark.parametrize("row", [r for r in TABLE if not r.guard and not r.unless], ids=row_id)
def test_unguarded_rows_ignore_the_breaker(row: Transition) -> None:
    rec = Rec(state=row.source.value, breaker_open=True)
    assert MACHINE.fire(rec, row.trigger) is row.dest
    assert rec.seen == [(row.source, row.dest, row.trigger)]


ILLEGAL = [
    (trigger, phase, breaker)
    for trigger, phase, breaker in itertools.product(Trigger, Phase, (False, True))
    if not any(r.trigger is trigger and r.source is phase for r in TABLE)
]


def test_the_illegal_list_is_not_empty() -> None:
    # Sanity of the exhaustive case below: most pairs are illegal, some are not.
    assert 0 < len(ILLEGAL) < len(Trigger) * len(Phase) * 2


@pytest.mark.parametrize(
    ("trigger", "phase", "breaker"),
    ILLEGAL,
    ids=[f"{t}-from-{p}-{'open' if b else 'closed'}" for t, p, b in ILLEGAL],
)
def test_every_pair_outside_the_table_raises(trigger: Trigger, phase: Phase, breaker: bool) -> None:
    rec = Rec(state=phase.value, breaker_open=breaker)
    with pytest.raises(IllegalTransition):
        MACHINE.fire(rec, trigger)
    assert rec.state == phase.value  # nothing moved
    assert rec.seen == []


def test_illegal_transition_is_permanent() -> None:
    assert issubclass(IllegalTransition, PermanentError)


def test_every_pair_in_the_table_moves_for_either_breaker_value() -> None:
    # A guarded pair has both a guard row and an unless row: it never gets stuck.
    for trigger, phase in itertools.product(Trigger, Phase):
        rows = allowed(trigger, phase)
        if not rows:
            continue
        for breaker in (False, True):
            rec = Rec(state=phase.value, breaker_open=breaker)
            dest = MACHINE.fire(rec, trigger)
            expected = [
                r.dest for r in rows if (not r.guard or breaker) and (not r.unless or not breaker)
            ]
            assert [dest] == expected, (trigger, phase, breaker)


@pytest.mark.parametrize(
    ("trigger", "source"),
    [
        (Trigger.TRANSCRIPTION_FAILED, Phase.TRANSCRIBING),
        (Trigger.DECLINED, Phase.GENERATING),
        (Trigger.TURN_FAILED, Phase.GENERATING),
        (Trigger.TURN_FAILED, Phase.TRANSCRIBING),
    ],
)
def test_guards_pick_degraded_or_idle(trigger: Trigger, source: Phase) -> None:
    open_rec = Rec(state=source.value, breaker_open=True)
    closed_rec = Rec(state=source.value, breaker_open=False)
    assert MACHINE.fire(open_rec, trigger) is Phase.DEGRADED
    assert MACHINE.fire(closed_rec, trigger) is Phase.IDLE


def test_a_whole_turn_through_degraded_and_back() -> None:
    rec = Rec()
    MACHINE.fire(rec, Trigger.HEAR_VOICE)
    MACHINE.fire(rec, Trigger.TRANSCRIBED)
    MACHINE.fire(rec, Trigger.LLM_UNAVAILABLE)
    rec.breaker_open = True
    MACHINE.fire(rec, Trigger.HEAR_TEXT)
    MACHINE.fire(rec, Trigger.DECLINED)
    rec.breaker_open = False
    MACHINE.fire(rec, Trigger.PROBE_SUCCEEDED)
    assert [(s.value, d.value, t.value) for s, d, t in rec.seen] == [
        ("idle", "transcribing", "hear_voice"),
        ("transcribing", "generating", "transcribed"),
        ("generating", "degraded", "llm_unavailable"),
        ("degraded", "generating", "hear_text"),
        ("generating", "degraded", "declined"),
        ("degraded", "idle", "probe_succeeded"),
    ]


def test_records_are_independent() -> None:
    a, b = Rec(), Rec()
    MACHINE.fire(a, Trigger.COMPRESS)
    assert (a.state, b.state) == ("compressing", "idle")
    assert b.seen == []


def test_reset_from_idle_stays_idle_and_is_recorded() -> None:
    rec = Rec()
    assert MACHINE.fire(rec, Trigger.RESET) is Phase.IDLE
    assert rec.seen == [(Phase.IDLE, Phase.IDLE, Trigger.RESET)]


def test_a_table_row_guard_with_a_custom_table() -> None:
    table = (Transition(Trigger.RESET, Phase.IDLE, Phase.DEGRADED, guard=BREAKER_OPEN),)
    machine = Lifecycle(table)
    rec = Rec()
    with pytest.raises(IllegalTransition, match="no guard held"):
        machine.fire(rec, Trigger.RESET)
    rec.breaker_open = True
    assert machine.fire(rec, Trigger.RESET) is Phase.DEGRADED
