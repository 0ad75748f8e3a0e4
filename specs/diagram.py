"""Renders `engine.lifecycle.TABLE` as a Mermaid state diagram (`specs/lifecycle.md`).

Regenerate with `python -m specs.diagram > specs/lifecycle.md`; a test keeps them equal.
"""

from __future__ import annotations

from engine.lifecycle import INITIAL, TABLE, Transition


def _label(t: Transition) -> str:
    if t.guard:
        return f"{t.trigger.value} [{t.guard}]"
    if t.unless:
        return f"{t.trigger.value} [not {t.unless}]"
    return t.trigger.value


def mermaid(table: tuple[Transition, ...] = TABLE) -> str:
    """The Mermaid `stateDiagram-v2` source for `table`."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.value}"]
    lines += [f"    {t.source.value} --> {t.dest.value}: {_label(t)}" for t in table]
    return "\n".join(lines)


def document(table: tuple[Transition, ...] = TABLE) -> str:
    """The whole `specs/lifecycle.md`: a short preface and the diagram."""
    return (
        "# Actor lifecycle\n\n"
        "Generated from `engine/lifecycle.py` by `python -m specs.diagram > specs/lifecycle.md`;\n"
        "`tests/unit/test_diagram.py` fails when the two differ. Guards in brackets read the\n"
        "actor's circuit breaker; every trigger not drawn here is illegal from that state.\n\n"
        "```mermaid\n" + mermaid(table) + "\n```\n"
    )


if __name__ == "__main__":
    print(document(), end="")  # noqa: T201 - the module's output is the document
