"""Settings from `BUTLER_*` environment variables: `Settings.from_env` walks the one table
(`variables.VARIABLES`), reports every bad value at once and warns of unknown names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.deps import ActorSettings
from adapters.bootstrap import parsers as p
from adapters.bootstrap.variables import DEFAULT_LLM_URL, REMOVED, VARIABLES
from adapters.stt.config import SttSettings
from adapters.telegram.config import TelegramSettings
from engine.compression import CompressionPolicy
from engine.errors import ConfigurationError
from engine.prompt import MESSAGE_OVERHEAD_TOKENS, Budget

__all__ = ["DEFAULT_LLM_URL", "Settings", "SettingsError", "configuration_table"]


class SettingsError(ConfigurationError, ValueError):
    """Environment variables hold values Butler cannot use: one line per problem."""

    def __init__(self, problems: str | tuple[str, ...], warnings: tuple[str, ...] = ()) -> None:
        problems = (problems,) if isinstance(problems, str) else problems
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings
        """Unknown names, as `Settings.warnings`: a misspelt name often explains a problem."""


_GROUPS: dict[str, type[Any]] = {
    "budget": Budget,
    "policy": CompressionPolicy,
    "actors": ActorSettings,
    "stt": SttSettings,
    "telegram": TelegramSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. The defaults here agree with `VARIABLES` (a test checks)."""

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
    lease_ttl_s: float = 15.0
    budget: Budget = Budget()
    policy: CompressionPolicy = CompressionPolicy()
    # The service coalesces lines written in one breath; the engine alone does not.
    actors: ActorSettings = ActorSettings(coalesce_s=0.4)
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
    trace_url: str = ""  # the admin page's trace links, `{trace_id}` filled in
    broker_urls: tuple[str, ...] = field(default=(), repr=False)  # may carry credentials
    broker_partitions: int = 16
    broker_replicas: int = 1

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file when the store is SQLite, else None."""
        return p.sqlite_file(self.store)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (the process environment by default).

        Raises:
            SettingsError: one or more values do not parse or are out of range; it names each.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        for var in VARIABLES:
            name, raw = var.name, env.get(var.name, "").strip()
            if not raw and var.alias:
                name, raw = var.alias, env.get(var.alias, "").strip()
            if not raw:
                name, raw = var.name, var.derive(env, values) if var.derive else var.default
            try:
                values[var.name] = var.parse(raw)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        problems += _cross_checks(values)
        warnings = unknown_names(env)
        if problems:
            raise SettingsError(tuple(problems), warnings)
        top: dict[str, Any] = {"warnings": warnings}
        groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
        for var in VARIABLES:
            for path in var.fields:
                group, _, name = path.rpartition(".")
                (groups[group] if group else top)[name] = values[var.name]
        # Part of the response cache's key: which model (or which endpoints) answered.
        groups["actors"]["model_name"] = values["BUTLER_LLM_MODEL"] or ",".join(
            values["BUTLER_LLM_URL"]
        )
        top.update({name: kind(**groups[name]) for name, kind in _GROUPS.items()})
        return cls(**top)


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    """Problems no single variable shows; skipped where a variable they need is already bad."""
    problems = []
    names = ("BUTLER_BUDGET_PERSONA", "BUTLER_BUDGET_SUMMARY", "BUTLER_BUDGET_MEMORY")
    total = values.get("BUTLER_BUDGET_TOTAL")
    if total is not None and all(n in values for n in names):
        budgets: list[int] = [values[n] for n in names]
        # PromptBuilder: persona and message each add their chat markup; summary and memory
        # include theirs. A message must fit beside every section at its full budget.
        needed = sum(budgets) + 2 * MESSAGE_OVERHEAD_TOKENS + 1
        if total < needed:
            persona, summary, memory = budgets
            problems.append(
                f"BUTLER_BUDGET_TOTAL: {total} leaves no room for a message after persona "
                f"{persona} + summary {summary} + memory {memory} tokens and "
                f"{2 * MESSAGE_OVERHEAD_TOKENS} of chat markup; set it to at least {needed} "
                "or lower those budgets"
            )
    webhook = values.get("BUTLER_WEBHOOK_URL", "")
    if webhook.startswith("http://") and not values.get("BUTLER_TELEGRAM_API_URL", "x"):
        problems.append("BUTLER_WEBHOOK_URL: Telegram only calls https:// webhooks")
    return problems


def unknown_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """A warning for each `BUTLER_*` name the table lacks (`BUTLER_TEST_*` belong to tests)."""
    known = {var.name for var in VARIABLES}
    strays = sorted(
        n
        for n in env
        if n.startswith("BUTLER_") and n not in known and not n.startswith("BUTLER_TEST_")
    )
    if not strays:
        return ()
    import difflib  # only when there is something to say: start-up time counts

    warnings = []
    for name in strays:
        if name in REMOVED:
            warnings.append(f"{name} is no longer read: {REMOVED[name]}")
            continue
        # Compared without the prefix they all share, or any name looks close to some other.
        close = difflib.get_close_matches(name[7:], [k[7:] for k in known], n=1)
        hint = f"did you mean BUTLER_{close[0]}?" if close else "see docs/configuration.md"
        warnings.append(f"unknown {name} ({hint})")
    return tuple(warnings)


def configuration_table() -> str:
    """The Markdown table of every variable, as docs/configuration.md holds it."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for var in VARIABLES:
        default = var.derived or (f"`{var.default}`" if var.default else "(empty)")
        lines.append(f"| `{var.name}` | {default} | {var.doc} |")
    return "\n".join(lines) + "\n"
