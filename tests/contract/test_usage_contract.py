"""The `UsageStore` contract (token budgets): every backend in `conftest.BACKENDS` passes it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.budget import Usage
from engine.domain import UserProfile
from engine.errors import StoreUnavailable
from engine.ports import Store
from tests.contract.conftest import Backend

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


async def test_a_new_user_has_spent_nothing(store: Store):
    assert await store.usage("nobody", now=NOW) == Usage(0, 0)


async def test_usage_adds_up_per_user_in_the_day_and_the_month(store: Store):
    await store.add_usage("u1", 120, now=NOW)
    await store.add_usage("u1", 30, now=NOW - timedelta(hours=3))
    await store.add_usage("u2", 7, now=NOW)
    assert await store.usage("u1", now=NOW) == Usage(day=150, month=150)
    assert await store.usage("u2", now=NOW) == Usage(day=7, month=7)


async def test_a_new_day_starts_at_zero_and_the_month_goes_on(store: Store):
    morning = NOW.replace(day=30, hour=8)
    await store.add_usage("u1", 100, now=morning)
    await store.add_usage("u1", 40, now=NOW)
    assert await store.usage("u1", now=NOW) == Usage(day=40, month=140)
    assert await store.usage("u1", now=morning) == Usage(day=0, month=140)


async def test_a_new_month_starts_at_zero(store: Store):
    await store.add_usage("u1", 500, now=NOW)
    january = NOW + timedelta(minutes=1)  # 2027-01-01 00:00:30 UTC
    assert await store.usage("u1", now=january) == Usage(0, 0)
    await store.add_usage("u1", 9, now=january)
    assert await store.usage("u1", now=january) == Usage(day=9, month=9)


async def test_times_in_other_zones_count_in_utc(store: Store):
    # 2026-12-31 22:00 in Moscow is 19:00 UTC: still the last day of December in UTC.
    moscow = datetime(2026, 12, 31, 22, 0, tzinfo=timezone(timedelta(hours=3)))
    await store.add_usage("u1", 10, now=moscow)
    assert await store.usage("u1", now=NOW) == Usage(day=10, month=10)
    # 2027-01-01 02:00 in Moscow is 23:00 UTC on 31 December.
    await store.add_usage("u1", 5, now=moscow + timedelta(hours=4))
    assert await store.usage("u1", now=NOW) == Usage(day=15, month=15)


async def test_concurrent_adds_all_count(store: Store):
    await asyncio.gather(*(store.add_usage("u1", 3, now=NOW) for _ in range(40)))
    assert await store.usage("u1", now=NOW) == Usage(day=120, month=120)


async def test_reset_forgets_one_users_usage(store: Store):
    await store.add_usage("u1", 50, now=NOW)
    await store.add_usage("u2", 60, now=NOW)
    await store.reset_usage("u1")
    await store.reset_usage("never-seen")  # nothing to forget is no error
    assert await store.usage("u1", now=NOW) == Usage(0, 0)
    assert await store.usage("u2", now=NOW) == Usage(60, 60)
    await store.add_usage("u1", 5, now=NOW)
    assert await store.usage("u1", now=NOW) == Usage(5, 5)


async def test_a_negative_count_is_refused_and_changes_nothing(store: Store):
    await store.add_usage("u1", 10, now=NOW)
    with pytest.raises(ValueError, match="0 or more"):
        await store.add_usage("u1", -1, now=NOW)
    assert await store.usage("u1", now=NOW) == Usage(10, 10)


async def test_zero_tokens_are_recorded_as_nothing(store: Store):
    await store.add_usage("u1", 0, now=NOW)
    assert await store.usage("u1", now=NOW) == Usage(0, 0)


async def test_erasing_a_user_erases_their_usage(store: Store):
    await store.save_profile(UserProfile.new("u1", NOW))
    await store.add_usage("u1", 80, now=NOW)
    await store.add_usage("u2", 1, now=NOW)
    await store.erase_user("u1")
    assert await store.usage("u1", now=NOW) == Usage(0, 0)
    assert await store.usage("u2", now=NOW) == Usage(1, 1)


async def test_usage_survives_a_reopen(backend: Backend):
    first = await backend.open()
    await first.add_usage("u1", 42, now=NOW)
    await first.close()
    second = await backend.open()
    try:
        assert await second.usage("u1", now=NOW) == Usage(42, 42)
    finally:
        await second.close()


async def test_a_closed_store_refuses_usage(backend: Backend):
    store = await backend.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.add_usage("u1", 1, now=NOW)
    with pytest.raises(StoreUnavailable):
        await store.usage("u1", now=NOW)
