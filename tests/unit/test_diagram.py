"""The committed lifecycle diagram is the one generated from the transition table."""

from __future__ import annotations

from pathlib import Path

from engine.lifecycle import TABLE, Phase
from specs.diagram import document, mermaid

ROOT = Path(__file__).parents[2]
LIFECYCLE_MD = ROOT / "specs" / "lifecycle.md"
ARCHITECTURE_MD = ROOT / "docs" / "architecture.md"


def test_committed_diagram_matches_the_table() -> None:
    assert LIFECYCLE_MD.read_text(encoding="utf-8") == document(), (
        "regenerate with: python -m specs.diagram > specs/lifecycle.md"
    )


def test_the_architecture_page_draws_the_same_table() -> None:
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```mermaid\n")[1:]]
    assert blocks == [mermaid() + "\n"], (
        "docs/architecture.md: paste the diagram of python -m specs.diagram"
    )


def test_every_row_and_phase_is_drawn() -> None:
    text = mermaid()
    assert text.count(" --> ") == len(TABLE) + 1  # plus the initial arrow
    for phase in Phase:
        assert phase.value in text
