"""One user's conversation as the admin page and `butler admin history` show it: the profile,
the summary, the last messages with PII masked, and the live actor's transitions with how
long each state lasted and a link to the turn's trace.

Personal data is always masked here (`engine.redact`), whatever `BUTLER_REDACT_MEMORY` says:
an operator debugging a conversation needs its shape, not the user's card or phone number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.history import TransitionRecord
from adapters.admin.views import profile_json, transition_json
from engine.domain import MemoryEvent, UserProfile
from engine.ports import Clock, Store
from engine.redact import redact

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def trace_link(template: str, trace_id: str | None) -> str | None:
    """The trace viewer's address for a trace (`{trace_id}` filled in); None without either."""
    if not template or not trace_id:
        return None
    return template.replace("{trace_id}", trace_id)


def event_json(event: MemoryEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.created_at.isoformat(timespec="seconds"),
        "role": event.role,
        "source": event.source,
        "text": redact(event.content),
        "reply_to": event.reply_to or None,
    }


def timeline_json(
    clock: Clock, records: Sequence[TransitionRecord], trace_url: str
) -> list[dict[str, Any]]:
    """Transitions oldest first; `duration_s` is the time spent in `to` (so far, for the last)."""
    rows: list[dict[str, Any]] = []
    now = clock.monotonic()
    for i, record in enumerate(records):
        row = transition_json(clock, record)
        ended = records[i + 1].at if i + 1 < len(records) else now
        row["duration_s"] = round(max(0.0, ended - record.at), 3)
        row["ongoing"] = i + 1 == len(records)
        row["trace_url"] = trace_link(trace_url, row["trace_id"])
        rows.append(row)
    return rows


async def conversation(
    store: Store, user_id: str, *, limit: int
) -> tuple[UserProfile | None, list[MemoryEvent], int]:
    """The profile, the last `limit` events (oldest first) and how many are stored."""
    profile = await store.get_profile(user_id)
    context = await store.load_turn(user_id, limit=limit, before="\uffff")
    events = sorted(context.memory.events, key=lambda e: e.id)[-limit:] if limit else []
    return profile, events, context.memory.total_events


def history_json(
    user_id: str,
    profile: UserProfile | None,
    events: Sequence[MemoryEvent],
    total: int,
    timeline: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The shape `GET /admin/actors/{user_id}/history` answers and `--json` prints."""
    shown = None if profile is None else profile_json(profile)
    if shown is not None:
        shown["memory_summary"] = redact(profile.memory_summary if profile else "")
    return {
        "user_id": user_id,
        "profile": shown,
        "summary": shown["memory_summary"] if shown else "",
        "memory_events": total,
        "events": [event_json(e) for e in events],
        "transitions": timeline,  # None: no service holds the actor (read from the store)
        "redacted": True,
    }
