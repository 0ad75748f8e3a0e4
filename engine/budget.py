"""Per-user token budgets (seed 003): the periods (UTC day, calendar month), the levels a
user's usage reaches against the limits, and when a spent budget renews.

Pure rules: the store keeps the counts (`ports.UsageStore`), the actor picks the level at the
start of a turn. At `REDUCED_AT` of either limit the prompt drops to the summary and the last
`BRIEF_EVENTS` events; at the whole limit the model is not asked at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

BudgetLevel = Literal["normal", "reduced", "exhausted"]
Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")

REDUCED_AT = 0.8
"""The share of a limit at which the prompt is cut down (seed 003's 80 %)."""
BRIEF_EVENTS = 5
"""Events a reduced prompt keeps beside the summary (seed 003's truncation rule)."""


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """Tokens a user may spend per UTC day and per calendar month; 0 is no limit."""

    daily: int = 0
    monthly: int = 0

    def __post_init__(self) -> None:
        if self.daily < 0 or self.monthly < 0:
            raise ValueError("token limits are 0 (no limit) or more")

    @property
    def unlimited(self) -> bool:
        return not self.daily and not self.monthly


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a user spent in the day and the month that hold a moment (prompt plus reply)."""

    day: int = 0
    month: int = 0


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Where a user stands: the level, the period that set it (None while normal), the share
    of each limit used (0.0 without a limit), and when the level-setting period renews."""

    level: BudgetLevel
    period: Period | None
    day_share: float
    month_share: float
    renews_at: datetime | None


def _utc(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime {now!r}: budgets count in aware UTC time")
    return now.astimezone(UTC)


def day_start(now: datetime) -> datetime:
    """Midnight UTC of the day holding `now`."""
    return _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    """Midnight UTC of the first day of the month holding `now`."""
    return day_start(now).replace(day=1)


def next_day(now: datetime) -> datetime:
    """When the day after `now`'s begins (a daily budget renews)."""
    return day_start(now) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    """When the month after `now`'s begins (a monthly budget renews)."""
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def period_keys(now: datetime) -> tuple[str, str]:
    """The store's keys of the day and the month holding `now`: `d2026-12-03`, `m2026-12`."""
    moment = _utc(now)
    return f"d{moment:%Y-%m-%d}", f"m{moment:%Y-%m}"


def _share(used: int, limit: int) -> float:
    return used / limit if limit > 0 else 0.0


def assess(usage: Usage, limits: TokenLimits, now: datetime) -> BudgetState:
    """The level `usage` reaches against `limits` at `now`.

    The higher share decides; when both periods are at the same level the month decides,
    since it renews later (a spent month is not renewed by the next day).
    """
    day_share = _share(usage.day, limits.daily)
    month_share = _share(usage.month, limits.monthly)

    def level_of(share: float) -> int:
        return 2 if share >= 1.0 else 1 if share >= REDUCED_AT else 0

    day_level, month_level = level_of(day_share), level_of(month_share)
    top = max(day_level, month_level)
    if top == 0:
        return BudgetState("normal", None, day_share, month_share, None)
    level: BudgetLevel = "exhausted" if top == 2 else "reduced"
    if month_level == top:
        return BudgetState(level, "month", day_share, month_share, next_month(now))
    return BudgetState(level, "day", day_share, month_share, next_day(now))
