"""The transcript's language label follows the script it is written in (ru/en only)."""

from __future__ import annotations

import pytest

from adapters.stt.whisper import _language


@pytest.mark.parametrize(
    ("text", "decoded_as", "expected"),
    [
        ("Good evening, please remind me.", "ru", "en"),
        ("Добрый вечер, сэр.", "en", "ru"),
        ("Добрый вечер, Alfred.", "ru", "ru"),
        ("Bonjour, monsieur.", "fr", "fr"),
        ("12:30", "ru", "ru"),
    ],
)
def test_the_label_follows_the_script(text: str, decoded_as: str, expected: str) -> None:
    assert _language(text, decoded_as) == expected
