"""What the Telegram front door is configured with (filled from `BUTLER_*` by bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    """The Telegram front door (`butler run`)."""

    token: str = field(default="", repr=False)
    api_url: str = ""
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1:8443"
    webhook_secret: str = field(default="", repr=False)
    allowed_users: frozenset[int] = frozenset()
    rate_per_minute: int = 20
    rate_burst: int = 10
    quote_transcript: bool = True
    polling_timeout_s: int = 25
    bot_sends_per_s: int = 30
    """The bot-wide send budget (Telegram's ~30 a second; more with paid broadcasts or a
    local Bot API server). Workers on a broker share it."""
