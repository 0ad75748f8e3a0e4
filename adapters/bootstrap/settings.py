"""Settings from `BUTLER_*` environment variables (every one is listed in the README)."""

from __future__ import annotations

import builtins
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from actors.deps import ActorSettings
from adapters.stt.config import SttSettings
from adapters.telegram.config import TelegramSettings
from engine.compression import CompressionPolicy
from engine.errors import ConfigurationError
from engine.prompt import Budget

DEFAULT_LLM_URL = "http://127.0.0.1:8080/v1"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8377"


class SettingsError(ConfigurationError, ValueError):
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
    stt: SttSettings = SttSettings()
    log_level: str = "WARNING"
    telegram: TelegramSettings = TelegramSettings()
    log_format: str = "text"
    log_salt: str = field(default="", repr=False)
    admin_addr: tuple[str, int] = ("127.0.0.1", 8377)
    admin_token: str = field(default="", repr=False)
    admin_url: str = "http://127.0.0.1:8377"
    llm_local_model: str = ""
    worker_interval_s: float = 600.0
    worker_idle_s: float = 3600.0
    worker_metrics_file: str = ""
    warnings: tuple[str, ...] = ()
    """Said on stderr at start: unknown `BUTLER_*` names, with the closest known one."""

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
                redact_memory=get.flag("BUTLER_REDACT_MEMORY"),
                cache_ttl_s=float(get.int("BUTLER_LLM_CACHE_TTL_S", 86400, minimum=0)),
                model_name=get.str("BUTLER_LLM_MODEL", "") or ",".join(urls),
            ),
            stt=SttSettings(
                model=get.str("BUTLER_WHISPER_MODEL", ""),
                max_seconds=get.float("BUTLER_VOICE_MAX_SECONDS", 300.0),
                concurrency=get.int("BUTLER_STT_CONCURRENCY", 1),
                threads=get.int("BUTLER_STT_THREADS", 0, minimum=0),
                beam_size=get.int("BUTLER_STT_BEAM_SIZE", 1),
                wait_s=get.float("BUTLER_STT_WAIT_S", 120.0),
            ),
            log_level=get.str("BUTLER_LOG_LEVEL", "WARNING").upper(),
            telegram=_telegram(get),
            log_format=_choice(env, "BUTLER_LOG_FORMAT", ("text", "json")),
            log_salt=get.str("BUTLER_LOG_SALT", ""),
            admin_addr=_host_port(get.str("BUTLER_ADMIN_ADDR", "127.0.0.1:8377")),
            admin_token=get.str("BUTLER_ADMIN_TOKEN", ""),
            admin_url=get.str("BUTLER_ADMIN_URL", "http://127.0.0.1:8377").rstrip("/"),
            llm_local_model=_local_model(get.str("BUTLER_LLM_LOCAL_MODEL", "")),
            worker_interval_s=get.float("BUTLER_WORKER_INTERVAL_S", 600.0),
            worker_idle_s=get.float("BUTLER_WORKER_IDLE_S", 3600.0),
            worker_metrics_file=get.str("BUTLER_WORKER_METRICS_FILE", ""),
        )


def _telegram(get: _Reader) -> TelegramSettings:
    api_url = get.str("BUTLER_TELEGRAM_API_URL", "").rstrip("/")
    webhook = get.str("BUTLER_WEBHOOK_URL", "")
    for name, url in (("BUTLER_TELEGRAM_API_URL", api_url), ("BUTLER_WEBHOOK_URL", webhook)):
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name}: expected an http(s) URL")
    if webhook and not webhook.startswith("https://") and not api_url:
        raise SettingsError("BUTLER_WEBHOOK_URL: Telegram only calls https:// webhooks")
    raw_users = get.str("BUTLER_ALLOWED_USERS", "")
    try:
        allowed = frozenset(int(u) for u in raw_users.replace(" ", "").split(",") if u)
    except ValueError as exc:
        raise SettingsError("BUTLER_ALLOWED_USERS: comma-separated Telegram user ids") from exc
    quote = get.str("BUTLER_VOICE_QUOTE_TRANSCRIPT", "1").lower()
    if quote not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise SettingsError("BUTLER_VOICE_QUOTE_TRANSCRIPT: expected 1 or 0")
    return TelegramSettings(
        token=get.str("BUTLER_TELEGRAM_TOKEN", ""),
        api_url=api_url,
        webhook_url=webhook,
        webhook_listen=get.str("BUTLER_WEBHOOK_LISTEN", "127.0.0.1:8443"),
        webhook_secret=get.str("BUTLER_WEBHOOK_SECRET", ""),
        allowed_users=allowed,
        rate_per_minute=get.int("BUTLER_RATE_LIMIT_PER_MINUTE", 20, minimum=0),
        rate_burst=get.int("BUTLER_RATE_LIMIT_BURST", 10),
        quote_transcript=quote in {"1", "true", "yes", "on"},
        polling_timeout_s=get.int("BUTLER_TELEGRAM_POLL_TIMEOUT_S", 25, minimum=0),
    )


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or allowed[0]
    if value not in allowed:
        raise SettingsError(f"{name}: one of {', '.join(allowed)}, got {value!r}")
    return value


def _host_port(raw: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) as a pair."""
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"BUTLER_ADMIN_ADDR: expected host:port, got {raw!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _local_model(path: str) -> str:
    """A CTranslate2 model directory, checked now so a typo fails at start, not at fallback."""
    if not path:
        return ""
    folder = Path(path).expanduser()
    if not (folder / "model.bin").is_file() or not (folder / "tokenizer.json").is_file():
        raise SettingsError(
            f"BUTLER_LLM_LOCAL_MODEL: {folder} is not a CTranslate2 model directory "
            "(model.bin and tokenizer.json expected; see the README on converting a model)"
        )
    if importlib.util.find_spec("ctranslate2") is None:
        raise SettingsError(
            "BUTLER_LLM_LOCAL_MODEL needs the local-llm extra: pip install 'butler[local-llm]'"
        )
    return str(folder)


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

    def flag(self, name: builtins.str) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if raw in {"", "0", "false", "no", "off"}:
            return False
        if raw in {"1", "true", "yes", "on"}:
            return True
        raise SettingsError(f"{name}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")

    def float(self, name: builtins.str, default: float) -> float:
        raw = self.env.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError as exc:
            raise SettingsError(f"{name}: expected a number, got {raw!r}") from exc
        if value <= 0:
            raise SettingsError(f"{name}: must be positive")
        return value
