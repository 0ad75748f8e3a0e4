"""The circuit breaker: open on failure, half-open after a cool-down that doubles."""

from __future__ import annotations

from engine.breaker import Breaker


def test_starts_closed() -> None:
    b = Breaker()
    assert not b.open
    assert b.may_try(0.0)
    assert b.seconds_until_probe(0.0) is None


def test_trip_opens_with_the_base_cooldown() -> None:
    b = Breaker(cooldown_s=30, max_cooldown_s=600)
    b.trip(100.0)
    assert b.open
    assert b.current_cooldown_s == 30
    assert not b.may_try(100.0)
    assert not b.may_try(129.9)
    assert b.seconds_until_probe(110.0) == 20.0


def test_half_open_after_the_cooldown() -> None:
    b = Breaker(cooldown_s=30)
    b.trip(100.0)
    assert b.may_try(130.0)
    assert b.open  # still open: the probe decides
    assert b.seconds_until_probe(130.0) == 0.0
    assert b.seconds_until_probe(500.0) == 0.0


def test_failed_probes_double_the_cooldown_up_to_the_max() -> None:
    b = Breaker(cooldown_s=30, max_cooldown_s=200)
    now = 0.0
    seen = []
    for _ in range(5):
        b.trip(now)
        seen.append(b.current_cooldown_s)
        now += b.current_cooldown_s
    assert seen == [30, 60, 120, 200, 200]


def test_trip_restarts_the_cooldown_from_now() -> None:
    b = Breaker(cooldown_s=30)
    b.trip(0.0)
    b.trip(40.0)
    assert b.opened_at == 40.0
    assert not b.may_try(99.0)
    assert b.may_try(100.0)


def test_close_resets() -> None:
    b = Breaker(cooldown_s=30)
    b.trip(0.0)
    b.trip(30.0)
    b.close()
    assert not b.open
    assert b.may_try(30.0)
    assert b.seconds_until_probe(30.0) is None
    b.trip(31.0)
    assert b.current_cooldown_s == 30  # the next outage starts from the base again
