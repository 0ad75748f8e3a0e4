"""Memory compaction inside the actor: the summary is written before the events it covers
are deleted, never past a message still waiting in the mailbox."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from actors import port_calls
from actors.envelope import Envelope
from actors.observe import (
    CompressionFinished,
    ProfileAccessed,
)
from engine import compression
from engine.domain import UserProfile
from engine.errors import (
    LLMRejected,
    SummaryRejected,
    TransientError,
)
from engine.lifecycle import Phase, Trigger
from engine.messages import (
    CompressMemory,
)

if TYPE_CHECKING:
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


async def on_compress(actor: UserActor, cmd: CompressMemory, envelope: Envelope) -> None:
    deps = actor.deps
    if actor.phase is not Phase.IDLE or not deps.settings.personalization:
        return  # degraded: summarising needs the model (the policy retries later); or off
    context = await deps.store.load_turn(actor.user_id, limit=0, before="\uffff")
    profile = context.profile
    count = context.memory.total_events
    if profile is not None and (
        deps.policy.due(count) or (cmd.eager and count > deps.policy.keep_last)
    ):
        await compress(actor, profile)


async def maybe_compress(actor: UserActor, profile: UserProfile, event_count: int) -> None:
    deps = actor.deps
    if (
        deps.policy.due(event_count)
        and actor.backoff.ready(deps.clock.monotonic())
        and actor.phase is Phase.IDLE
    ):
        await compress(actor, profile)


async def compress(actor: UserActor, profile: UserProfile) -> None:
    deps = actor.deps
    started = deps.clock.monotonic()
    actor.fire(Trigger.COMPRESS)
    deleted, reason = 0, ""
    with deps.tracer.start_as_current_span("butler.compress") as span:
        try:
            async with asyncio.timeout(deps.policy.timeout_s):
                deleted = await compress_once(actor, profile)
        except (TransientError, LLMRejected, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, SummaryRejected) else type(exc).__name__
            span.set_attribute("butler.compression.failure", reason)
    seconds = deps.clock.monotonic() - started
    if reason:
        actor.backoff.failed(deps.clock.monotonic())
        actor.fire(Trigger.COMPRESSION_FAILED)
        deps.observer.record(CompressionFinished("error", seconds, deleted, reason))
    else:
        actor.backoff.succeeded()
        actor.fire(Trigger.COMPRESSED)
        deps.observer.record(CompressionFinished("ok", seconds, deleted))


async def compress_once(actor: UserActor, profile: UserProfile) -> int:
    deps = actor.deps
    policy = deps.policy
    candidates = await deps.store.events_before(actor.user_id, keep_last=policy.keep_last)
    # Never past what is still owed: a message waiting in the mailbox, one stored but not in
    # it (skipped while the store was down, answered by the recovery), or a reply not yet
    # delivered (the outbox sends it from the store).
    owed = [e.event_id for e in actor.mailbox if e.event_id]
    owed += [e.id for e in await deps.store.unanswered(actor.user_id)]
    owed += [e.id for e in await deps.store.owed_replies(actor.user_id)]
    selection = compression.select(candidates, profile, stop_before=min(owed, default=""))
    if not selection.to_summarise:
        if not selection.covered:
            return 0
        return await deps.store.apply_summary(profile, selection.covered)
    request = compression.summary_request(deps.summarize, profile, selection.to_summarise, policy)
    completion = await port_calls.complete(actor, request, deps.summarize.version)
    summary = completion.text.strip()
    limit = min(policy.summary_budget, deps.prompts.summary_body_budget(profile.language))
    reason = compression.reject_reason(
        summary,
        profile.language,
        deps.counter,
        limit,
        facts=compression.known_facts(profile),
    )
    if reason is not None:
        if selection.covered:  # leftovers of an interrupted run are safe to delete
            await deps.store.apply_summary(profile, selection.covered)
        raise SummaryRejected(reason)
    through = selection.to_summarise[-1].id
    updated = profile.with_summary(summary, through, deps.clock.now())
    ids = (*selection.covered, *(e.id for e in selection.to_summarise))
    deleted = await deps.store.apply_summary(updated, ids)
    deps.observer.record(ProfileAccessed(write=True))
    return deleted
