"""Hypothesis strategies for conversations: users, message texts in both languages, PII-free."""

from __future__ import annotations

from hypothesis import strategies as st

USERS = ("u0", "u1", "u2")

user_ids = st.sampled_from(USERS)

russian_words = st.sampled_from(
    ("привет", "сэр", "чай", "погода", "встреча", "кот", "ужин", "письмо", "поезд", "спасибо")
)
english_words = st.sampled_from(
    ("hello", "sir", "tea", "weather", "meeting", "cat", "dinner", "letter", "train", "thanks")
)

message_texts = st.lists(st.one_of(russian_words, english_words), min_size=1, max_size=12).map(
    " ".join
)
"""Short natural-looking messages, mixing Russian and English words."""

bursts = st.integers(min_value=1, max_value=6)
"""How many messages a user sends before the actor gets to run."""

time_steps = st.sampled_from((0.5, 5.0, 31.0, 120.0))
"""Clock advances: below, just past and far past the breaker cool-down."""
