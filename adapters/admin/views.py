"""JSON shapes of the admin API: actors, transitions, profiles and the state machine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from actors.deps import ActorSettings
from actors.history import TransitionRecord
from actors.registry import ActorView, Registry
from engine.budget import Usage, assess, next_day, next_month
from engine.codec import profile_to_dict
from engine.domain import UserProfile
from engine.lifecycle import INITIAL, TABLE, Phase
from engine.ports import Clock
from specs.diagram import mermaid


def wall_time(clock: Clock, monotonic_at: float) -> str:
    """The wall-clock ISO time of a monotonic timestamp of `clock`."""
    delta = timedelta(seconds=clock.monotonic() - monotonic_at)
    return (clock.now() - delta).isoformat(timespec="milliseconds")


def transition_json(clock: Clock, r: TransitionRecord) -> dict[str, Any]:
    return {
        "user_id": r.user_id,
        "at": wall_time(clock, r.at),
        "from": r.source.value,
        "to": r.dest.value,
        "trigger": r.trigger.value,
        "trace_id": format(r.trace_id, "032x") if r.trace_id else None,
    }


def usage_json(
    user_id: str, usage: Usage, settings: ActorSettings, now: datetime
) -> dict[str, Any]:
    """A user's token usage against the budgets at `now`: per period the tokens, the limit
    (None: no limit), the percent used and when the period renews; the level and when it
    lifts; and whether personalization is on."""
    limits = settings.token_limits
    state = assess(usage, limits, now)

    def period(tokens: int, limit: int, share: float, renews: datetime) -> dict[str, Any]:
        return {
            "tokens": tokens,
            "limit": limit or None,
            "percent": round(share * 100, 1) if limit else None,
            "renews_at": renews.isoformat(),
        }

    return {
        "user_id": user_id,
        "personalization": settings.personalization,
        "day": period(usage.day, limits.daily, state.day_share, next_day(now)),
        "month": period(usage.month, limits.monthly, state.month_share, next_month(now)),
        "level": state.level,
        "period": state.period,
        "renews_at": None if state.renews_at is None else state.renews_at.isoformat(),
    }


def actor_json(clock: Clock, v: ActorView) -> dict[str, Any]:
    last = None
    if v.last_transition is not None:
        at, source, dest, trigger = v.last_transition
        last = {"at": wall_time(clock, at), "from": source, "to": dest, "trigger": trigger}
    return {
        "user_id": v.user_id,
        "state": v.state,
        "mailbox_depth": v.mailbox_depth,
        "turn_age_s": None if v.turn_age_s is None else round(v.turn_age_s, 3),
        "idle_s": round(v.idle_s, 3),
        "last_transition": last,
        "transitions": v.transitions,
        "messages": v.messages,
        "budget": v.budget_level,
    }


def profile_json(p: UserProfile) -> dict[str, Any]:
    """The profile as `engine.codec` writes it (the dump's fields, times in UTC)."""
    return profile_to_dict(p)


def transition_counts(metrics: CollectorRegistry) -> dict[tuple[str, str, str], int]:
    """Transitions made since start, by (from, to, trigger), from `butler_actor_transitions`."""
    counts: dict[tuple[str, str, str], int] = {}
    for family in metrics.collect():
        if family.name != "butler_actor_transitions":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["from"], sample.labels["to"], sample.labels["trigger"])
                counts[key] = int(sample.value)
    return counts


def machine_json(
    registry: Registry, counts: dict[tuple[str, str, str], int] | None = None
) -> dict[str, Any]:
    """The lifecycle table with the number of live actors in each state and, per transition,
    how many times it was taken since the service started."""
    live = registry.count_by_phase()
    made = counts or {}
    return {
        "initial": INITIAL.value,
        "states": [{"state": p.value, "count": live[p]} for p in Phase],
        "transitions": [
            {
                "from": t.source.value,
                "to": t.dest.value,
                "trigger": t.trigger.value,
                "guard": t.guard or (f"not {t.unless}" if t.unless else ""),
                "count": made.get((t.source.value, t.dest.value, t.trigger.value), 0),
            }
            for t in TABLE
        ],
        "mermaid": mermaid(),
    }
