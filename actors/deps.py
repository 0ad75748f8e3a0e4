"""What every actor shares: ports, policies and settings, bundled once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.trace import Tracer

from actors.history import TransitionFeed
from actors.machine import Lifecycle
from actors.observe import Observer
from engine.breaker import Breaker
from engine.budget import TokenLimits
from engine.compression import CompressionPolicy
from engine.domain import EventIds
from engine.ports import Clock, LanguageModel, ReplySink, Store, TokenCounter, Transcriber
from engine.prompt import PromptBuilder, Template
from engine.redact import redact


@dataclass(frozen=True, slots=True)
class ActorSettings:
    """Tunables of actors and the registry (environment variables in docs/configuration.md)."""

    mailbox_capacity: int = 32
    recent_events: int = 20
    idle_timeout_s: float = 15 * 60
    breaker_cooldown_s: float = 30.0
    breaker_max_cooldown_s: float = 600.0
    llm_deadline_s: float = 120.0
    store_retry_s: float = 2.0
    store_retry_max_s: float = 60.0
    cache_ttl_s: float = 24 * 3600.0  # the response cache; 0 turns it off
    model_name: str = ""  # part of the cache key: the model (or the endpoints) answering
    redact_memory: bool = False  # PII is replaced before user text is stored or prompted
    coalesce_s: float = 0.0
    """Messages arriving this soon after one that found the actor idle share its turn."""
    personalization: bool = True
    """Off: the plain model answers (no persona, profile, history or summary in the prompt;
    no compression); messages and replies are still stored for delivery and recovery."""
    token_budget_daily: int = 0  # tokens per user per UTC day; 0: no limit
    token_budget_monthly: int = 0  # tokens per user per calendar month (UTC); 0: no limit

    @property
    def token_limits(self) -> TokenLimits:
        return TokenLimits(self.token_budget_daily, self.token_budget_monthly)

    def memory_text(self, text: str) -> str:
        """`text` as memory may hold it: redacted when `redact_memory` is on."""
        return redact(text) if self.redact_memory else text

    def new_breaker(self) -> Breaker:
        return Breaker(self.breaker_cooldown_s, self.breaker_max_cooldown_s)


@dataclass(frozen=True, slots=True)
class ActorDeps:
    """The ports and policies one process gives all its actors."""

    store: Store
    llm: LanguageModel
    sink: ReplySink
    clock: Clock
    counter: TokenCounter
    prompts: PromptBuilder
    summarize: Template
    observer: Observer
    tracer: Tracer
    transcriber: Transcriber | None = None
    policy: CompressionPolicy = CompressionPolicy()
    settings: ActorSettings = ActorSettings()
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    ids: EventIds = field(default_factory=EventIds)
    feed: TransitionFeed = field(default_factory=TransitionFeed)
