"""Token budget rules (engine/budget.py): periods in UTC, levels at 80 % and 100 %, renewal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.budget import (
    REDUCED_AT,
    TokenLimits,
    Usage,
    assess,
    day_start,
    month_start,
    next_day,
    next_month,
    period_keys,
)
from engine.domain import Language
from engine.persona import budget_spent, variants

NOW = datetime(2026, 12, 3, 6, 5, tzinfo=UTC)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-8))]),
)


def test_no_limit_is_always_normal():
    state = assess(Usage(10**9, 10**9), TokenLimits(), NOW)
    assert state.level == "normal"
    assert state.renews_at is None
    assert TokenLimits().unlimited


def test_below_80_percent_is_normal_and_at_80_is_reduced():
    limits = TokenLimits(daily=1000)
    assert assess(Usage(799, 799), limits, NOW).level == "normal"
    reduced = assess(Usage(800, 800), limits, NOW)
    assert (reduced.level, reduced.period) == ("reduced", "day")
    assert reduced.day_share == pytest.approx(0.8)
    assert reduced.renews_at == datetime(2026, 12, 4, tzinfo=UTC)


def test_at_the_whole_daily_limit_it_is_exhausted_until_midnight_utc():
    state = assess(Usage(1000, 1000), TokenLimits(daily=1000, monthly=100_000), NOW)
    assert (state.level, state.period) == ("exhausted", "day")
    assert state.renews_at == datetime(2026, 12, 4, tzinfo=UTC)


def test_a_spent_month_is_not_renewed_by_the_next_day():
    state = assess(Usage(1000, 5000), TokenLimits(daily=1000, monthly=5000), NOW)
    assert (state.level, state.period) == ("exhausted", "month")
    assert state.renews_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_higher_level_decides_between_periods():
    state = assess(Usage(100, 4000), TokenLimits(daily=1000, monthly=5000), NOW)
    assert (state.level, state.period) == ("reduced", "month")
    state = assess(Usage(1000, 4000), TokenLimits(daily=1000, monthly=5000), NOW)
    assert (state.level, state.period) == ("exhausted", "day")


def test_negative_limits_are_refused():
    with pytest.raises(ValueError, match="0"):
        TokenLimits(daily=-1)


def test_periods_are_utc_and_naive_times_are_refused():
    evening_in_la = datetime(2026, 12, 31, 18, 0, tzinfo=timezone(timedelta(hours=-8)))
    assert period_keys(evening_in_la) == ("d2027-01-01", "m2027-01")
    assert next_month(datetime(2026, 12, 15, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        period_keys(datetime(2026, 12, 3))  # noqa: DTZ001 - the point of the test


@given(now=moments)
def test_period_bounds_hold_the_moment(now: datetime):
    assert day_start(now) <= now < next_day(now)
    assert month_start(now) <= day_start(now)
    assert next_day(now) <= next_month(now)
    assert next_month(now).day == 1
    assert next_day(now) - day_start(now) == timedelta(days=1)
    day_key, month_key = period_keys(now)
    assert day_key.startswith("d" + month_key[1:])
    assert period_keys(next_day(now))[0] != day_key


@given(
    day=st.integers(0, 10_000),
    extra=st.integers(0, 10_000),
    daily=st.integers(0, 5_000),
    monthly=st.integers(0, 20_000),
    now=moments,
)
def test_levels_follow_the_shares(day: int, extra: int, daily: int, monthly: int, now: datetime):
    usage, limits = Usage(day, day + extra), TokenLimits(daily, monthly)
    state = assess(usage, limits, now)
    shares = [s for s, limit in ((state.day_share, daily), (state.month_share, monthly)) if limit]
    top = max(shares, default=0.0)
    expected = "exhausted" if top >= 1 else "reduced" if top >= REDUCED_AT else "normal"
    assert state.level == expected
    assert (state.renews_at is None) == (expected == "normal")
    if state.renews_at is not None:
        assert state.renews_at > now
        assert state.renews_at in {next_day(now), next_month(now)}
    # More usage never lowers the level.
    order = ["normal", "reduced", "exhausted"]
    more = assess(Usage(day + 1, day + extra + 1), limits, now)
    assert order.index(more.level) >= order.index(state.level)


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("period", ["day", "month"])
def test_the_spent_line_names_the_renewal_in_the_users_language(
    language: Language, period: str
) -> None:
    text = budget_spent(period, datetime(2027, 1, 1, tzinfo=UTC), language, seed="x")
    assert "00:00 UTC" in text
    assert ("1 января" if language == "ru" else "1 January") in text
    assert (
        ("месяц" if period == "month" else "день") in text if language == "ru" else period in text
    )
    assert "{" not in text
    assert len(variants("budget_spent", language)) >= 2
