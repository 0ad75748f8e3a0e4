"""Reading updates one by one: a getUpdates whose batch stays raw JSON, the repair of text no
codec can carry (lone surrogates), and the verdict on an update nobody can read (poisoned).

aiogram's own GetUpdates validates the whole batch at once, so a single update of an unknown
shape (after a Bot API change) fails the call, and the batch comes back forever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.methods import GetUpdates
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from pydantic import ValidationError

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A decoded str holds a surrogate only when it is lone: JSON's escaped pairs become one code
point. SQLite, the tokenizer and every encoder refuse a lone one."""


def scrub(value: Any) -> Any:
    """`value` (decoded JSON) with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {key: scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


class RawGetUpdates(GetUpdates):
    """getUpdates whose result is left as JSON objects, so that each is read on its own."""

    __returning__ = list[Any]


@dataclass(frozen=True, slots=True)
class Poisoned:
    """An update that cannot be read: confirmed and skipped. `why` names fields, not values."""

    update_id: int | None
    why: str


@dataclass(slots=True)
class Batch:
    """A getUpdates batch read one update at a time."""

    updates: list[Update] = field(default_factory=list)
    poisoned: list[Poisoned] = field(default_factory=list)


def read_update(raw: Any, bot: Bot) -> Update:
    """One update from its JSON (or an Update a session middleware already made).

    Raises:
        ValueError: the JSON is not an update aiogram can read.
    """
    if isinstance(raw, Update):
        return raw  # already read by a session middleware (test stand-ins)
    try:
        return Update.model_validate(scrub(raw), context={"bot": bot})
    except ValidationError as exc:
        # Field paths only: pydantic's message would quote the offending values.
        places = sorted({".".join(map(str, e["loc"])) for e in exc.errors(include_input=False)})
        raise ValueError("invalid " + ", ".join(places[:5])) from None


def update_id_of(raw: Any) -> int | None:
    value = raw.get("update_id") if isinstance(raw, dict) else getattr(raw, "update_id", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_batch(raw: Sequence[Any], bot: Bot) -> Batch:
    """Read every update of a batch, setting aside those that cannot be read.

    Reading is deterministic, so an update that fails once fails on every delivery: it is
    given up at once rather than retried (a retry would only hold up the next poll).
    """
    batch = Batch()
    for item in raw:
        try:
            batch.updates.append(read_update(item, bot))
        except ValueError as exc:
            batch.poisoned.append(Poisoned(update_id_of(item), f"{exc} (fields {_places(item)})"))
    return batch


def _places(raw: Any) -> str:
    """The update's top-level field names (its kind), never its values."""
    return (
        ",".join(sorted(str(key) for key in raw)) if isinstance(raw, dict) else type(raw).__name__
    )


ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
"""The kinds of update Butler asks Telegram for (getUpdates and setWebhook)."""


def update_kind(update: Update) -> str:
    """The update's kind; "unknown" for one of no kind aiogram knows (`{"update_id": N}`)."""
    try:
        return update.event_type
    except UpdateTypeLookupError:
        return "unknown"


def update_sender(update: Update) -> int | None:
    event = update.message or update.edited_message or update.callback_query
    user = getattr(event, "from_user", None)
    return user.id if user is not None else None
