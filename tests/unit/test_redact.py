"""Redaction examples: the formats users actually type, and what must stay."""

from __future__ import annotations

import pytest

from engine.redact import contains_pii, luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("пишите на ivan.petrov+bank@mail.yandex.ru, сэр", "пишите на [email], сэр"),
        ("My mail: J_Doe99@example.co.uk.", "My mail: [email]."),
        ("звоните +7 (916) 123-45-67 вечером", "звоните [phone] вечером"),
        ("или 8 916 123 45 67", "или [phone]"),
        ("8-916-123-45-67", "[phone]"),
        ("+79161234567", "[phone]"),
        ("89161234567", "[phone]"),
        ("London +44 20 7946 0958", "London [phone]"),
        ("карта 4111 1111 1111 1111 на имя", "карта [card] на имя"),
        ("card 5500-0000-0000-0004", "card [card]"),
        ("Мир 2200000000000004", "Мир [card]"),
        ("паспорт 45 06 123456 выдан", "паспорт [passport] выдан"),
        ("серия и номер 4506 123456", "серия и номер [passport]"),
        ("загран 75 1234567", "загран [passport]"),
        ("passport AB1234567", "passport [passport]"),
    ],
)
def test_finds_pii(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Встреча 21.11.2026 в 12:30, стол 14",
        "It costs 1 500 ₽ or 25 000 ₽",
        "4111 1111 1111 1112",  # fails Luhn: not a card
        "order 12345, room 404, year 2026",
        "version 3.12.7 and ISBN-free prose",
        "[email] [phone] [card] [passport]",
        "user at example dot com",
        "",
    ],
)
def test_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text
    assert not contains_pii(text)


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_a_year_before_a_card_does_not_hide_it():
    # Found by the property test: the year joined the card's groups and shifted the match.
    assert (
        redact("привет 01.01.1990 4000 0000 0000 0002 привет") == "привет 01.01.1990 [card] привет"
    )
    assert "0002" not in redact("привет 01.01.1992 4000 0000 0000 0002 привет")  # both windows
