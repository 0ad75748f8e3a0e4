"""Invariants of a conversation, stated over what users and the store can observe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def at_most_one_reply(reply_to: Iterable[str]) -> list[str]:
    """Message ids answered more than once (must be empty)."""
    return [event_id for event_id, n in Counter(reply_to).items() if n > 1]


def fifo(accepted: Sequence[str], answered: Sequence[str]) -> bool:
    """Replies to one user come in the order the messages were accepted."""
    order = {event_id: i for i, event_id in enumerate(accepted)}
    positions = [order[a] for a in answered if a in order]
    return positions == sorted(positions)


def deletions_covered(deleted_ids: Iterable[str], summary_through: str) -> list[str]:
    """Deleted event ids that the stored summary does not cover (must be empty)."""
    return [event_id for event_id in deleted_ids if event_id > summary_through]


def overdue_probe(degraded: bool, seconds_until_probe: float | None, *, llm_up: bool) -> bool:
    """A resting actor still degraded although its cool-down passed and the model is back
    (must be False once the actor has waited: the probe runs without a new message)."""
    return degraded and llm_up and seconds_until_probe == 0.0
