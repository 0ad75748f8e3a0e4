"""The one table of `BUTLER_*` variables: each named once, with its one default, its parser,
the settings attributes it fills and a line for docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.bootstrap import parsers as p

DEFAULT_LLM_URL = "http://127.0.0.1:8080/v1"

Derive = Callable[[Mapping[str, str], Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class Variable:
    """One `BUTLER_*` variable: where its value goes, how it parses, its default."""

    name: str
    fields: tuple[str, ...]
    """Settings attributes it fills: `llm_retries`, or `budget.total` inside a group."""
    parse: Callable[[str], Any]
    default: str
    """As an operator would write it; unset or blank means this. Empty when `derive` is set."""
    doc: str
    derive: Derive | None = None
    """Computes the default from the environment and the variables before this one."""
    derived: str = ""
    """The derived default, in words, for the docs."""
    alias: str = ""
    """Another name read when this one is unset or blank (a seed's bare name)."""


def _data_dir(env: Mapping[str, str], _: Mapping[str, Any]) -> str:
    return str(Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "butler")


def _store(_: Mapping[str, str], values: Mapping[str, Any]) -> str:
    return str(Path(values["BUTLER_DATA_DIR"]) / "butler.sqlite3")


def _admin_url(_: Mapping[str, str], values: Mapping[str, Any]) -> str:
    host, port = values.get("BUTLER_ADMIN_ADDR", ("127.0.0.1", 8377))
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (a client's view)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _v(name: str, fields: str, parse: Callable[[str], Any], default: str, doc: str) -> Variable:
    return Variable(name, tuple(fields.split()), parse, default, doc)


_POSITIVE, _COUNT, _SECONDS = p.integer(minimum=1), p.integer(minimum=0), p.number()

VARIABLES: tuple[Variable, ...] = (
    Variable(
        "BUTLER_DATA_DIR", ("data_dir",), lambda raw: Path(raw).expanduser(), "",
        "where the SQLite file and the speech-to-text models live",
        _data_dir, "`$XDG_DATA_HOME/butler`, else `~/.local/share/butler`",
    ),
    Variable(
        "BUTLER_STORE", ("store",), p.store, "",
        "the store: a SQLite file path, `sqlite:///relative.db`, `sqlite:////absolute.db`, "
        "or `mongodb(+srv)://[user:password@]host[:port]/[database][?options]`; never logged",
        _store, "`$BUTLER_DATA_DIR/butler.sqlite3`",
    ),
    _v("BUTLER_RETENTION_DAYS", "retention_days", _POSITIVE, "90",
       "events older than this are purged (at start, then hourly; on MongoDB a TTL index too)"),
    _v("BUTLER_LLM_URL", "llm_urls", p.http_urls, DEFAULT_LLM_URL,
       "one or more OpenAI-style base URLs, comma-separated, tried in order"),
    _v("BUTLER_LLM_MODEL", "llm_model", p.text, "",
       "model name sent to the server; empty: the server's first `/models` entry"),
    _v("BUTLER_LLM_API_KEY", "llm_api_key", p.text, "",
       "bearer token for the LLM server; never logged"),
    _v("BUTLER_LLM_CONNECT_TIMEOUT_S", "llm_connect_timeout_s", _SECONDS, "3",
       "seconds to connect, per attempt"),
    _v("BUTLER_LLM_READ_TIMEOUT_S", "llm_read_timeout_s", _SECONDS, "60",
       "seconds to wait for bytes of an answer, per attempt"),
    _v("BUTLER_LLM_TOTAL_TIMEOUT_S", "llm_total_timeout_s", _SECONDS, "90",
       "seconds one attempt may take in all"),
    _v("BUTLER_LLM_RETRIES", "llm_retries", _COUNT, "2",
       "retries per URL, on transient errors only, with jittered backoff"),
    _v("BUTLER_LLM_DEADLINE_S", "actors.llm_deadline_s", _SECONDS, "120",
       "seconds a whole chain (every URL, every retry) may take to answer"),
    _v("BUTLER_LLM_COOLDOWN_S", "actors.breaker_cooldown_s", _SECONDS, "30",
       "seconds a degraded actor waits before probing the model; "
       "doubles per failed probe up to 600"),
    _v("BUTLER_LLM_CACHE_TTL_S", "actors.cache_ttl_s", p.number(zero=True), "86400",
       "seconds a model reply stays in the response cache; 0 turns the cache off"),
    _v("BUTLER_LLM_LOCAL_MODEL", "llm_local_model", p.local_model, "",
       "a CTranslate2 model directory: the in-process fallback when every URL fails"),
    _v("BUTLER_TOKENIZER", "tokenizer", p.text, "",
       "the served model's `tokenizer.json`: exact token counts; empty: a calibrated estimate"),
    _v("BUTLER_BUDGET_PERSONA", "budget.persona", _POSITIVE, "200",
       "tokens of the persona section"),
    _v("BUTLER_BUDGET_SUMMARY", "budget.summary policy.summary_budget", _POSITIVE, "300",
       "tokens of the memory summary"),
    _v("BUTLER_BUDGET_MEMORY", "budget.memory", _POSITIVE, "800", "tokens of recent events"),
    _v("BUTLER_BUDGET_TOTAL", "budget.total", _POSITIVE, "2000",
       "tokens of the whole prompt; the message may use what the sections leave"),
    _v("BUTLER_BUDGET_REPLY", "budget.reply", _POSITIVE, "512",
       "`max_tokens` of a reply (the model's context must hold the total plus this)"),
    _v("BUTLER_MEMORY_THRESHOLD", "policy.threshold", _POSITIVE, "50",
       "compress when a user holds more events than this"),
    _v("BUTLER_MEMORY_KEEP", "policy.keep_last actors.recent_events", _POSITIVE, "20",
       "events kept raw by compression and read into each prompt"),
    _v("BUTLER_COMPRESSION_TIMEOUT_S", "policy.timeout_s", _SECONDS, "60",
       "seconds the model may take for one summary"),
    _v("BUTLER_REDACT_MEMORY", "actors.redact_memory", p.flag, "0",
       "`1`: replace e-mails, phones, cards and passports before text is stored or prompted"),
    Variable(
        "BUTLER_PERSONALIZATION_ENABLED", ("actors.personalization",), p.flag, "1",
        "`0`: the kill switch: replies come from the plain model, with no persona, profile, "
        "summary or history in the prompt and no compression (messages and replies are still "
        "stored for delivery); the seed's `PERSONALIZATION_ENABLED` is read when this is unset",
        alias="PERSONALIZATION_ENABLED",
    ),
    _v("BUTLER_TOKEN_BUDGET_DAILY", "actors.token_budget_daily", _COUNT, "0",
       "tokens (prompt + reply) a user may spend per UTC day: at 80 % prompts hold the summary "
       "and the last 5 events, at 100 % the butler says when it renews; 0: no limit"),
    _v("BUTLER_TOKEN_BUDGET_MONTHLY", "actors.token_budget_monthly", _COUNT, "0",
       "tokens a user may spend per calendar month (UTC), with the daily budget's levels; "
       "0: no limit"),
    _v("BUTLER_MAILBOX_CAPACITY", "actors.mailbox_capacity", _POSITIVE, "32",
       "messages that may wait per user"),
    _v("BUTLER_COALESCE_MS", "actors.coalesce_s", p.millis, "400",
       "milliseconds: text messages arriving this soon after one that found the actor idle "
       "are answered as one turn (lines written in one breath); 0: every message its own"),
    _v("BUTLER_IDLE_TIMEOUT_S", "actors.idle_timeout_s", _SECONDS, "900",
       "seconds before an idle actor is passivated"),
    _v("BUTLER_LEASE_TTL_S", "lease_ttl_s", _SECONDS, "15",
       "seconds a process's claim on a user lasts unrenewed (renewed every third); another "
       "process takes the user over after it, or at once when the holder is gone from this host"),
    _v("BUTLER_WHISPER_MODEL", "stt.model", p.text, "",
       "speech-to-text model: a CTranslate2 Whisper directory, a size name or a hub id; "
       "empty: the packaged base model"),
    _v("BUTLER_VOICE_MAX_SECONDS", "stt.max_seconds", _SECONDS, "300",
       "seconds; longer voice notes are refused with a clear answer"),
    _v("BUTLER_STT_CONCURRENCY", "stt.concurrency", _POSITIVE, "1",
       "transcriptions running at once (each in a worker thread)"),
    _v("BUTLER_STT_THREADS", "stt.threads", _COUNT, "0",
       "CTranslate2 threads per transcription; 0: the CPU count, at most 4"),
    _v("BUTLER_STT_BEAM_SIZE", "stt.beam_size", _POSITIVE, "1", "Whisper beam size (1 is greedy)"),
    _v("BUTLER_STT_WAIT_S", "stt.wait_s", _SECONDS, "120",
       "seconds a voice note may wait for a free transcription before a busy error"),
    _v("BUTLER_TELEGRAM_TOKEN", "telegram.token", p.text, "",
       "the bot token; without it `butler run` serves the engine and the admin server only"),
    _v("BUTLER_TELEGRAM_API_URL", "telegram.api_url", p.http_url_or_empty, "",
       "another Bot API server (a local `telegram-bot-api`, an emulator); empty: Telegram's"),
    _v("BUTLER_TELEGRAM_POLL_TIMEOUT_S", "telegram.polling_timeout_s", _COUNT, "25",
       "seconds of the long-poll wait of `getUpdates`"),
    _v("BUTLER_WEBHOOK_URL", "telegram.webhook_url", p.http_url_or_empty, "",
       "webhook mode: the public https URL Telegram posts to (its path is served)"),
    _v("BUTLER_WEBHOOK_LISTEN", "telegram.webhook_listen", p.listen_address, "127.0.0.1:8443",
       "`host:port` the webhook server listens on (behind a TLS proxy)"),
    _v("BUTLER_WEBHOOK_SECRET", "telegram.webhook_secret", p.text, "",
       "the `secret_token` Telegram must send with each update; empty: random per start"),
    _v("BUTLER_ALLOWED_USERS", "telegram.allowed_users", p.user_ids, "",
       "comma-separated Telegram user ids the bot serves; empty: everyone"),
    _v("BUTLER_RATE_LIMIT_PER_MINUTE", "telegram.rate_per_minute", _COUNT, "20",
       "turns per user per minute; a message over it is stored and answered with the turn "
       "ahead of it (never dropped); 0 turns the limit off"),
    _v("BUTLER_RATE_LIMIT_BURST", "telegram.rate_burst", _POSITIVE, "10",
       "messages a user may send at once, each its own turn, before the rate applies"),
    _v("BUTLER_TELEGRAM_BOT_RATE", "telegram.bot_sends_per_s", _POSITIVE, "30",
       "messages a second the bot sends at most, all chats together (Telegram's limit; raise "
       "it only with paid broadcasts or your own Bot API server); workers on a broker share it"),
    _v("BUTLER_VOICE_QUOTE_TRANSCRIPT", "telegram.quote_transcript", p.flag, "1",
       "quote the transcript above the reply to a voice note"),
    _v("BUTLER_ADMIN_ADDR", "admin_addr", p.host_port, "127.0.0.1:8377",
       "where the admin server (API, page, `/metrics`) listens; "
       "a non-loopback address needs a token"),
    _v("BUTLER_ADMIN_TOKEN", "admin_token", p.text, "",
       "bearer token of the admin API (and of `butler admin`); never logged"),
    Variable(
        "BUTLER_ADMIN_URL", ("admin_url",), p.http_url, "",
        "where `butler admin` and `butler worker` find a running service",
        _admin_url, "`http://` + `BUTLER_ADMIN_ADDR` (127.0.0.1 for 0.0.0.0)",
    ),
    _v("BUTLER_LOG_LEVEL", "log_level", p.choice(*p.LOG_LEVELS, upper=True), "warning",
       "debug, info, warning, error or critical; unset: error for `chat`, info for `run`"),
    _v("BUTLER_LOG_FORMAT", "log_format", p.choice("text", "json"), "text",
       "`text`, or `json`: one object per line with `trace_id`, `span_id` and a hashed `user`"),
    _v("BUTLER_LOG_SALT", "log_salt", p.text, "",
       "key of the user hash in JSON logs; empty: random per process"),
    _v("BUTLER_WORKER_INTERVAL_S", "worker_interval_s", _SECONDS, "600",
       "seconds between sweeps of `butler worker`"),
    _v("BUTLER_WORKER_IDLE_S", "worker_idle_s", _SECONDS, "3600",
       "`butler worker` also compresses a user idle this many seconds"),
    _v("BUTLER_WORKER_METRICS_FILE", "worker_metrics_file", p.text, "",
       "`butler worker` writes its metrics here for node_exporter's textfile collector"),
    _v("BUTLER_BROKER_URL", "broker_urls", p.nats_urls, "",
       "NATS JetStream server(s) for scale-out, comma-separated `nats://host:4222`; empty: "
       "one process, no broker (`butler front` needs it; `butler run` then consumes partitions)"),
    _v("BUTLER_BROKER_PARTITIONS", "broker_partitions", _POSITIVE, "16",
       "partitions of the update stream (a stable hash of the user id); fixed for the "
       "stream's life, the same for every front door and worker"),
    _v("BUTLER_BROKER_REPLICAS", "broker_replicas", _POSITIVE, "1",
       "JetStream replicas of the update stream when Butler creates it (3 on a 3-node cluster)"),
    _v("BUTLER_TRACE_URL", "trace_url", p.text, "",
       "a trace viewer's address with `{trace_id}`, linked from the admin page "
       "(e.g. `http://127.0.0.1:16686/trace/{trace_id}`); empty: no links"),
)  # fmt: skip

REMOVED = {"BUTLER_BUDGET_MESSAGE": "the message may use what the sections leave of the total"}
"""Names once read, and why they are gone: warned about, not refused."""
