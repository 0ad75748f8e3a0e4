"""Settings from `BUTLER_*` environment variables (every one is listed in the README)."""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from actors.deps import ActorSettings
from engine.compression import CompressionPolicy
from engine.prompt import Budget

DEFAULT_LLM_URL = "http://127.0.0.1:8080/v1"


class SettingsError(ValueError):
    """An environment variable holds a value Butler cannot use."""


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "butler"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with the defaults of the embedded (no server) setup."""

    data_dir: Path
    store: str = field(repr=False)  # a MongoDB URI may carry a password
    llm_urls: tuple[str, ...] = (DEFAULT_LLM_URL,)
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)
    llm_connect_timeout_s: float = 3.0
    llm_read_timeout_s: float = 60.0
    llm_total_timeout_s: float = 90.0
    llm_retries: int = 2
    tokenizer: str = ""
    retention_days: int = 90
    retention_interval_s: float = 3600.0
    budget: Budget = Budget()
    policy: CompressionPolicy = CompressionPolicy()
    actors: ActorSettings = ActorSettings()
    log_level: str = "WARNING"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file when the store is SQLite, else None."""
        if self.store.startswith(("mongodb://", "mongodb+srv://")):
            return None
        return Path(self.store.removeprefix("sqlite:///").removeprefix("sqlite://"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (the process environment by default).

        Raises:
            SettingsError: a value does not parse or is out of range.
        """
        env = os.environ if env is None else env
        get = _Reader(env)
        data_dir = Path(env.get("BUTLER_DATA_DIR") or _default_data_dir(env)).expanduser()
        urls = tuple(
            u.strip().rstrip("/") for u in get.str("BUTLER_LLM_URL", DEFAULT_LLM_URL).split(",")
        )
        if not all(u.startswith(("http://", "https://")) for u in urls):
            raise SettingsError("BUTLER_LLM_URL: comma-separated http(s) base URLs")
        return cls(
            data_dir=data_dir,
            store=get.str("BUTLER_STORE", str(data_dir / "butler.sqlite3")),
            llm_urls=urls,
            llm_model=get.str("BUTLER_LLM_MODEL", ""),
            llm_api_key=get.str("BUTLER_LLM_API_KEY", ""),
            llm_connect_timeout_s=get.float("BUTLER_LLM_CONNECT_TIMEOUT_S", 3.0),
            llm_read_timeout_s=get.float("BUTLER_LLM_READ_TIMEOUT_S", 60.0),
            llm_total_timeout_s=get.float("BUTLER_LLM_TOTAL_TIMEOUT_S", 90.0),
            llm_retries=get.int("BUTLER_LLM_RETRIES", 2, minimum=0),
            tokenizer=get.str("BUTLER_TOKENIZER", ""),
            retention_days=get.int("BUTLER_RETENTION_DAYS", 90),
            budget=Budget(
                persona=get.int("BUTLER_BUDGET_PERSONA", 200),
                memory=get.int("BUTLER_BUDGET_MEMORY", 800),
                summary=get.int("BUTLER_BUDGET_SUMMARY", 300),
                message=get.int("BUTLER_BUDGET_MESSAGE", 200),
                total=get.int("BUTLER_BUDGET_TOTAL", 2000),
                reply=get.int("BUTLER_BUDGET_REPLY", 512),
            ),
            policy=CompressionPolicy(
                threshold=get.int("BUTLER_MEMORY_THRESHOLD", 50),
                keep_last=get.int("BUTLER_MEMORY_KEEP", 20),
                summary_budget=get.int("BUTLER_BUDGET_SUMMARY", 300),
                timeout_s=get.float("BUTLER_COMPRESSION_TIMEOUT_S", 60.0),
            ),
            actors=ActorSettings(
                mailbox_capacity=get.int("BUTLER_MAILBOX_CAPACITY", 32),
                recent_events=get.int("BUTLER_MEMORY_KEEP", 20),
                idle_timeout_s=get.float("BUTLER_IDLE_TIMEOUT_S", 900.0),
                breaker_cooldown_s=get.float("BUTLER_LLM_COOLDOWN_S", 30.0),
                llm_deadline_s=get.float("BUTLER_LLM_DEADLINE_S", 120.0),
            ),
            log_level=get.str("BUTLER_LOG_LEVEL", "WARNING").upper(),
        )


@dataclass(frozen=True, slots=True)
class _Reader:
    # Its methods shadow `str` in the class body: later annotations say `builtins.str`.
    env: Mapping[str, str]

    def str(self, name: str, default: str) -> str:
        return self.env.get(name, "").strip() or default

    def int(self, name: builtins.str, default: int, *, minimum: int = 1) -> int:
        raw = self.env.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError as exc:
            raise SettingsError(f"{name}: expected an integer, got {raw!r}") from exc
        if value < minimum:
            raise SettingsError(f"{name}: must be at least {minimum}")
        return value

    def float(self, name: builtins.str, default: float) -> float:
        raw = self.env.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError as exc:
            raise SettingsError(f"{name}: expected a number, got {raw!r}") from exc
        if value <= 0:
            raise SettingsError(f"{name}: must be positive")
        return value
