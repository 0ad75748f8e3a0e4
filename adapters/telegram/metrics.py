"""Prometheus instruments of the Telegram front door (no user ids, no text in labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class TelegramMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "butler_telegram_updates",
            "Updates received, by kind and outcome (accepted, duplicate, refused, failed...).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.sends = Counter(
            "butler_telegram_requests",
            "Bot API calls made by the butler, by method and outcome.",
            ["method", "outcome"],
            registry=registry,
        )
        self.retry_after_seconds = Counter(
            "butler_telegram_retry_after_seconds",
            "Seconds Telegram asked the butler to wait (429 retry_after), summed.",
            registry=registry,
        )
        self.typing_delay_seconds = Histogram(
            "butler_telegram_typing_delay_seconds",
            "From an update's arrival to the typing action shown in its chat.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.voice_download_seconds = Histogram(
            "butler_telegram_voice_download_seconds",
            "getFile plus download of a voice note.",
            registry=registry,
        )

    def update(self, kind: str, outcome: str) -> None:
        self.updates.labels(kind, outcome).inc()

    def sent(self, method: str, outcome: str) -> None:
        self.sends.labels(method, outcome).inc()

    def retry_after(self, seconds: float) -> None:
        self.retry_after_seconds.inc(seconds)

    def typing_delay(self, seconds: float) -> None:
        self.typing_delay_seconds.observe(seconds)
