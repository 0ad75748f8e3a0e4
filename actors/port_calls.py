"""The actor's calls through its ports, each one span and one observation: the turn's
read, event writes, the prompt, the model behind the response cache, and token usage."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from actors.observe import (
    BudgetApplied,
    CacheLooked,
    EventsStored,
    LLMCalled,
    ProfileAccessed,
    PromptBuilt,
)
from engine.budget import BRIEF_EVENTS, BudgetState, Usage, assess
from engine.cache import cache_key
from engine.domain import MemoryEvent, TurnContext, UserProfile
from engine.errors import (
    LLMRejected,
    LLMUnavailable,
    StoreUnavailable,
)
from engine.ports import Completion, CompletionRequest
from engine.prompt import MESSAGE_OVERHEAD_TOKENS, Prompt

if TYPE_CHECKING:
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


async def load(actor: UserActor, event: MemoryEvent) -> TurnContext:
    deps = actor.deps
    started = deps.clock.monotonic()
    with deps.tracer.start_as_current_span("store.load_turn"):
        context = await deps.store.load_turn(
            actor.user_id, limit=deps.settings.recent_events, before=event.id
        )
    deps.observer.record(ProfileAccessed(write=False, seconds=deps.clock.monotonic() - started))
    return context


async def store_events(
    actor: UserActor, events: list[MemoryEvent], *, rewritten: tuple[MemoryEvent, ...] = ()
) -> None:
    """Append `events`, and in the same write `rewritten` (stored ones, written again)."""
    with actor.deps.tracer.start_as_current_span("store.append"):
        await actor.deps.store.append([*rewritten, *events])
    actor.deps.observer.record(EventsStored(tuple(e.role for e in events)))


async def budget(actor: UserActor) -> BudgetState | None:
    """Where the user stands against the token budget now; None when there is no limit."""
    deps = actor.deps
    limits = deps.settings.token_limits
    if limits.unlimited:
        return None
    now = deps.clock.now()
    with deps.tracer.start_as_current_span("store.usage") as span:
        usage = await deps.store.usage(actor.user_id, now=now)
        state = assess(usage, limits, now)
        span.set_attribute("butler.budget.level", state.level)
    actor.usage, actor.budget = usage, state
    if state.level != "normal":
        deps.observer.record(BudgetApplied(state.level))
    return state


async def record_usage(
    actor: UserActor, request: CompletionRequest, completion: Completion
) -> None:
    """Count the call's tokens against the user's budget: the model's usage when it reported
    one, else our counter's count of the prompt and the answer. Never fails the turn."""
    deps = actor.deps
    tokens = completion.prompt_tokens + completion.completion_tokens
    if tokens <= 0:  # no usage reported (or nonsense): count it ourselves
        counted = (
            deps.counter.count(m.content) + MESSAGE_OVERHEAD_TOKENS for m in request.messages
        )
        tokens = sum(counted) + deps.counter.count(completion.text)
    now = deps.clock.now()
    with deps.tracer.start_as_current_span("store.add_usage"):
        try:
            await deps.store.add_usage(actor.user_id, tokens, now=now)
        except StoreUnavailable:
            log.warning("token usage not recorded: store unavailable")
            return
    if actor.usage is not None and actor.budget is not None:
        actor.usage = Usage(actor.usage.day + tokens, actor.usage.month + tokens)
        actor.budget = assess(actor.usage, deps.settings.token_limits, now)


def build_prompt(
    actor: UserActor,
    profile: UserProfile,
    context: TurnContext,
    event: MemoryEvent,
    *,
    brief: bool = False,
) -> Prompt:
    """The reply prompt; `brief` (near the token budget): the summary and the last
    `BRIEF_EVENTS` events only."""
    with actor.deps.tracer.start_as_current_span("prompt.build") as span:
        prompt = actor.deps.prompts.build(
            profile,
            context.memory.events,
            event.content,
            event.tokens,
            events_limit=BRIEF_EVENTS if brief else None,
        )
        span.set_attribute("butler.prompt.brief", brief)
        tokens = prompt.tokens
        span.set_attributes(
            {
                "butler.prompt.tokens.persona": tokens.persona,
                "butler.prompt.tokens.summary": tokens.summary,
                "butler.prompt.tokens.memory": tokens.memory,
                "butler.prompt.tokens.message": tokens.message,
                "butler.prompt.events_used": prompt.events_used,
                "butler.prompt.events_dropped": prompt.events_dropped,
                "butler.prompt.template_version": prompt.template_version,
            }
        )
    truncated = prompt.events_dropped > 0 or prompt.summary_truncated
    actor.deps.observer.record(PromptBuilt(tokens.total, truncated))
    return prompt


def plain_prompt(actor: UserActor, event: MemoryEvent) -> Prompt:
    """The prompt with personalization off: a neutral system line and the message."""
    with actor.deps.tracer.start_as_current_span("prompt.build") as span:
        prompt = actor.deps.prompts.plain(event.content, event.tokens)
        span.set_attributes(
            {
                "butler.prompt.tokens.message": prompt.tokens.message,
                "butler.prompt.template_version": prompt.template_version,
            }
        )
    actor.deps.observer.record(PromptBuilt(prompt.tokens.total, truncated=False))
    return prompt


async def complete(
    actor: UserActor,
    request: CompletionRequest,
    template_version: str,
    cache_for: UserProfile | None = None,
    *,
    plain: bool = False,
) -> Completion:
    """Ask the model; replies (`cache_for` given, or `plain`: a reply keyed without a
    profile) go through the response cache. A call the model answered counts against the
    user's token budget; an answer from the cache costs nothing."""
    deps = actor.deps
    key = ""
    if (cache_for is not None or plain) and deps.settings.cache_ttl_s > 0:
        key = cache_key(
            template_version=template_version,
            model=deps.settings.model_name,
            profile=cache_for,
            request=request,
        )
        cached = await cached_answer(actor, key)
        deps.observer.record(CacheLooked(request.purpose, hit=cached is not None))
        if cached is not None:
            return Completion(cached, "cache", 0, 0, 0)
    completion = await call_model(actor, request, template_version)
    await record_usage(actor, request, completion)
    if key:
        await cache(actor, key, completion.text)
    return completion


async def cached_answer(actor: UserActor, key: str) -> str | None:
    with actor.deps.tracer.start_as_current_span("cache.get") as span:
        try:
            found = await actor.deps.store.cached_answer(key, now=actor.deps.clock.now())
        except StoreUnavailable:
            found = None  # a cache that cannot be read is a miss
        span.set_attribute("butler.cache.hit", found is not None)
        return found


async def cache(actor: UserActor, key: str, text: str) -> None:
    deps = actor.deps
    expires = deps.clock.now() + timedelta(seconds=deps.settings.cache_ttl_s)
    with deps.tracer.start_as_current_span("cache.put"):
        try:
            await deps.store.cache_answer(key, actor.user_id, text, expires_at=expires)
        except StoreUnavailable:
            log.warning("answer not cached: store unavailable")


async def call_model(
    actor: UserActor, request: CompletionRequest, template_version: str
) -> Completion:
    deps = actor.deps
    started = deps.clock.monotonic()
    status, endpoint, usage = "ok", 0, (0, 0)
    # The turn's step; each request to a model under it is a GenAI span of the adapter's.
    with deps.tracer.start_as_current_span("llm.chat") as span:
        span.set_attributes(
            {
                "butler.llm.purpose": request.purpose,
                "butler.llm.max_tokens": request.max_tokens,
                "butler.prompt.template_version": template_version,
            }
        )
        try:
            try:
                async with asyncio.timeout(deps.settings.llm_deadline_s):
                    completion = await deps.llm.complete(request)
            except TimeoutError as exc:  # the whole chain, retries included, took too long
                raise LLMUnavailable("the model chain missed its deadline") from exc
            if request.purpose == "reply" and not completion.text.strip():
                raise LLMUnavailable("the model answered with empty text")  # noqa: TRY301
            endpoint = completion.endpoint
            usage = (completion.prompt_tokens, completion.completion_tokens)
        except LLMUnavailable:
            status = "unavailable"
            raise
        except LLMRejected:
            status = "rejected"
            raise
        finally:
            deps.observer.record(
                LLMCalled(
                    request.purpose,
                    status,
                    endpoint,
                    deps.clock.monotonic() - started,
                    *usage,
                )
            )
        span.set_attributes(
            {
                "butler.llm.model": completion.model,
                "butler.llm.input_tokens": completion.prompt_tokens,
                "butler.llm.output_tokens": completion.completion_tokens,
                "butler.llm.endpoint": completion.endpoint,
            }
        )
    return completion
