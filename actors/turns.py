"""A turn: text or voice in, a stored reply out, the lifecycle fired on the way; and the
handlers of the other commands. `HANDLERS` is the actor's dispatch table."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from actors import compaction, outbox, port_calls, recovery
from actors.envelope import Envelope, Handler
from actors.observe import (
    ProfileAccessed,
    TurnFinished,
)
from engine.domain import MemoryEvent, UserProfile
from engine.errors import (
    BadAudio,
    DeliveryFailed,
    LeaseLost,
    LLMRejected,
    LLMUnavailable,
    MessageTooLong,
    StoreUnavailable,
    TranscriberBusy,
    TransientError,
)
from engine.lifecycle import RESTING_PHASES, Phase, Trigger
from engine.messages import (
    CollectStored,
    CompressMemory,
    HandleText,
    HandleVoice,
    ResetActor,
    UpdateProfile,
)
from engine.persona import audio_problem, budget_spent, line
from engine.ports import OutgoingReply, ReplyKind

if TYPE_CHECKING:
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


async def on_text(actor: UserActor, cmd: HandleText, envelope: Envelope) -> None:
    actor.owed = cmd.event  # one reply to the newest answers the batch
    actor.owed_earlier = cmd.earlier
    actor.turn_started = actor.deps.clock.monotonic()
    actor.fire(Trigger.HEAR_TEXT)
    await answer(actor, cmd.event, envelope, cmd.earlier)


async def on_voice(actor: UserActor, cmd: HandleVoice, envelope: Envelope) -> None:
    deps = actor.deps
    actor.owed = cmd.event
    actor.turn_started = deps.clock.monotonic()
    actor.fire(Trigger.HEAR_VOICE)
    try:
        if not cmd.audio or deps.transcriber is None:
            raise BadAudio("the recording is no longer available", "lost")  # noqa: TRY301
        with deps.tracer.start_as_current_span("stt.transcribe"):
            transcript = await deps.transcriber.transcribe(cmd.audio, language_hint=actor.language)
    except (BadAudio, TranscriberBusy) as exc:
        # The audio itself is not kept: the user is asked to send it again.
        problem = exc.problem if isinstance(exc, BadAudio) else "busy"
        reason = audio_problem(problem, actor.language)
        text = line("voice_rejected", actor.language, cmd.event.id, reason=reason)
        await finish(
            actor, cmd.event, text, "voice_rejected", Trigger.TRANSCRIPTION_FAILED, envelope
        )
        return
    heard = deps.settings.memory_text(transcript.text)
    event = replace(cmd.event, content=heard, tokens=deps.counter.count(heard))
    await port_calls.store_events(actor, [event])
    actor.owed = event
    actor.fire(Trigger.TRANSCRIBED)
    await answer(actor, event, envelope)


async def answer(
    actor: UserActor,
    event: MemoryEvent,
    envelope: Envelope,
    earlier: tuple[MemoryEvent, ...] = (),
) -> None:
    """Answer `event`, and with it the `earlier` messages of its batch, in one reply.

    With personalization off nothing of the user's is read: no profile, no history. Over the
    token budget the model is not asked; near it the prompt is brief.
    """
    deps = actor.deps
    context, profile = None, None
    if deps.settings.personalization:
        context = await port_calls.load(actor, earlier[0] if earlier else event)
        profile = context.profile or UserProfile.new(
            actor.user_id, event.created_at, actor.language
        )
        actor.language = profile.language
    budget = await port_calls.budget(actor)
    if budget is not None and budget.level == "exhausted" and budget.renews_at is not None:
        text = budget_spent(budget.period or "day", budget.renews_at, actor.language, event.id)
        await finish(actor, event, text, "budget", Trigger.DECLINED, envelope)
        return
    if not actor.breaker.may_try(deps.clock.monotonic()):
        await degraded(actor, event, envelope)
        return
    message = _together(event, earlier)
    try:
        if context is None or profile is None:
            prompt = port_calls.plain_prompt(actor, message)
        else:
            brief = budget is not None and budget.level == "reduced"
            prompt = port_calls.build_prompt(actor, profile, context, message, brief=brief)
    except MessageTooLong as exc:
        text = line("too_long", actor.language, event.id, tokens=exc.tokens, budget=exc.budget)
        await finish(actor, event, text, "declined", Trigger.DECLINED, envelope)
        return
    try:
        completion = await port_calls.complete(
            actor,
            prompt.request(deps.prompts.budget.reply),
            prompt.template_version,
            profile,
            plain=profile is None,
        )
    except LLMUnavailable:
        actor.breaker.trip(deps.clock.monotonic())
        await degraded(actor, event, envelope)
        return
    actor.breaker.close()
    await finish(actor, event, completion.text, "reply", Trigger.REPLIED, envelope)
    if context is not None and profile is not None:
        await compaction.maybe_compress(actor, profile, context.memory.total_events + 1)


def _together(event: MemoryEvent, earlier: tuple[MemoryEvent, ...]) -> MemoryEvent:
    """The batch as the one message the prompt ends with, lines in the order written."""
    if not earlier:
        return event
    batch = (*earlier, event)
    content = "\n".join(e.content for e in batch if e.content)
    tokens = sum(e.tokens for e in batch) + len(earlier)  # a newline between lines
    return replace(event, content=content, tokens=tokens)


async def degraded(actor: UserActor, event: MemoryEvent, envelope: Envelope) -> None:
    text = line("degraded", actor.language, event.id)
    await finish(actor, event, text, "degraded", Trigger.LLM_UNAVAILABLE, envelope)


async def finish(  # noqa: PLR0917 - the outcome of a turn, in the order it is read
    actor: UserActor,
    event: MemoryEvent,
    text: str,
    status: ReplyKind,
    trigger: Trigger | None,
    envelope: Envelope,
) -> None:
    """Store the reply, settle the lifecycle, then hand the reply over."""
    deps = actor.deps
    reply_id, stamp = deps.ids.next(deps.clock.now())
    kept = deps.settings.memory_text(text)  # the user still gets the reply as written
    reply = MemoryEvent(
        id=reply_id,
        user_id=actor.user_id,
        role="assistant",
        content=kept,
        source=event.source,
        created_at=stamp,
        tokens=deps.counter.count(kept),
        reply_to=event.id,
    )
    # The earlier messages of a batch name the message whose reply answers them, in the
    # same write as the reply: both are answered, or neither is.
    owed = actor.owed
    batch = actor.owed_earlier if owed is not None and owed.id == event.id else ()
    folded = tuple(replace(e, reply_to=event.id) for e in batch)
    await port_calls.store_events(actor, [reply], rewritten=folded)
    actor.owed = None
    actor.owed_earlier = ()
    if trigger is not None:
        actor.fire(trigger)
    await outbox.send(actor, event, reply_id, text, status)
    now = deps.clock.monotonic()
    deps.observer.record(
        TurnFinished(
            event.source,
            "ok" if status == "reply" else status,  # the seeds' metric label for success
            now - envelope.accepted_at,
            now - actor.turn_started,
        )
    )


async def deliver(actor: UserActor, event: MemoryEvent, text: str, kind: ReplyKind) -> str:
    """Hand a reply to `event` to the sink; its receipt.

    Raises:
        DeliveryFailed: the front door could not take it now.
    """
    with actor.deps.tracer.start_as_current_span("sink.deliver"):
        return await actor.deps.sink.deliver(
            OutgoingReply(
                actor.user_id,
                text,
                event.id,
                kind,
                event.source,
                heard=event.content if event.source == "voice" else "",
            )
        )


async def crashed(actor: UserActor, exc: Exception, envelope: Envelope) -> None:
    if isinstance(exc, LeaseLost):  # another process serves the user: it answers, not this one
        log.warning("lease lost mid-turn; the actor stops without writing")
        actor.lease_lost = True
        actor.stop()
        return
    log.error(
        "turn failed",
        extra={"error_type": type(exc).__name__, "phase": actor.state},
        exc_info=not isinstance(exc, TransientError | LLMRejected),
    )
    if isinstance(exc, StoreUnavailable):
        recovery.store_down(actor)
    phase = actor.phase
    if phase is Phase.COMPRESSING:
        actor.backoff.failed(actor.deps.clock.monotonic())  # a bug must not run every turn
        actor.fire(Trigger.COMPRESSION_FAILED)
    elif phase not in RESTING_PHASES:
        actor.fire(Trigger.TURN_FAILED)
    owed = actor.owed
    if owed is None:
        return
    if not isinstance(exc, StoreUnavailable):
        try:
            text = line("error", actor.language, owed.id)
            await finish(actor, owed, text, "error", None, envelope)
        except StoreUnavailable:
            recovery.store_down(actor)
        else:
            return
    # The message stays unanswered in the store; the recovery sweep answers it later.
    try:
        await deliver(actor, owed, line("store_down", actor.language, owed.id), "error")
    except DeliveryFailed:
        log.warning("store-down notice not delivered")
    now = actor.deps.clock.monotonic()
    actor.deps.observer.record(
        TurnFinished(owed.source, "error", now - envelope.accepted_at, now - actor.turn_started)
    )


async def on_reset(actor: UserActor, cmd: ResetActor, envelope: Envelope) -> None:
    """Leave degraded and forget the breaker and backoff. Erasing is `Registry.erase`."""
    actor.breaker.close()
    actor.backoff.succeeded()
    actor.fire(Trigger.RESET)


async def on_update_profile(actor: UserActor, cmd: UpdateProfile, envelope: Envelope) -> None:
    deps = actor.deps
    now = deps.clock.now()
    with deps.tracer.start_as_current_span("store.save_profile"):
        profile = await deps.store.get_profile(actor.user_id)
        profile = cmd.apply(profile or UserProfile.new(actor.user_id, now, actor.language), now)
        await deps.store.save_profile(profile)
    actor.profile_known = True
    actor.language = profile.language
    deps.observer.record(ProfileAccessed(write=True))


HANDLERS: dict[type, Handler] = {
    HandleText: on_text,
    HandleVoice: on_voice,
    CompressMemory: compaction.on_compress,
    CollectStored: recovery.on_collect,
    ResetActor: on_reset,
    UpdateProfile: on_update_profile,
}
"""Command type -> its handler; `UserActor` dispatches through it."""
