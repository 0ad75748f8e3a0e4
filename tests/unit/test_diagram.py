"""The committed lifecycle diagram is the one generated from the transition table."""

from __future__ import annotations

from pathlib import Path

from engine.lifecycle import TABLE, Phase
from specs.diagram import document, mermaid

LIFECYCLE_MD = Path(__file__).parents[2] / "specs" / "lifecycle.md"


def test_committed_diagram_matches_the_table() -> None:
    assert LIFECYCLE_MD.read_text(encoding="utf-8") == document(), (
        "regenerate with: python -m specs.diagram > specs/lifecycle.md"
    )


def test_every_row_and_phase_is_drawn() -> None:
    text = mermaid()
    assert text.count(" --> ") == len(TABLE) + 1  # plus the initial arrow
    for phase in Phase:
        assert phase.value in text
