"""One user's actor: a task that takes envelopes from its mailbox in order and runs turns.

I/O happens here, between triggers; the lifecycle callbacks only record. `_handle` holds the
one broad `except` of the actor: whatever a message does, the user is answered, the error is
recorded and the actor settles in `idle` or `degraded`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from actors.deps import ActorDeps
from actors.history import HISTORY_SIZE, TransitionRecord
from actors.mailbox import Mailbox
from actors.observe import (
    CacheLooked,
    CompressionFinished,
    EventsStored,
    LLMCalled,
    ProfileAccessed,
    PromptBuilt,
    TransitionMade,
    TurnFinished,
)
from engine import compression
from engine.cache import cache_key
from engine.compression import Backoff
from engine.domain import Language, MemoryEvent, TurnContext, UserProfile
from engine.errors import (
    BadAudio,
    DeliveryFailed,
    LLMRejected,
    LLMUnavailable,
    MessageTooLong,
    StoreUnavailable,
    SummaryRejected,
    TranscriberBusy,
    TransientError,
)
from engine.lifecycle import RESTING_PHASES, Phase, Trigger
from engine.messages import (
    Command,
    CompressMemory,
    HandleText,
    HandleVoice,
    ResetActor,
    UpdateProfile,
    UserMessage,
)
from engine.persona import audio_problem, line
from engine.ports import Completion, CompletionRequest, OutgoingReply, ReplyKind
from engine.prompt import Prompt

log = logging.getLogger(__name__)

current_user: ContextVar[str] = ContextVar("butler_current_user", default="")
"""The user whose actor runs in this task; log formatters hash it (never log it raw)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A command plus the caller's trace context and when it was accepted.

    `persisted` resolves True once the caller's store write committed (False if it failed);
    recovered messages, already stored, carry None.
    """

    command: Command
    context: Context | None
    accepted_at: float
    persisted: asyncio.Future[bool] | None = None
    done: asyncio.Future[Exception | None] | None = None
    """Resolved when the command was handled: None, or the error it ended with."""

    @property
    def event_id(self) -> str:
        cmd = self.command
        return cmd.event.id if isinstance(cmd, HandleText | HandleVoice) else ""


Handler = Callable[["UserActor", Any, Envelope], Awaitable[None]]


class UserActor:
    """The state owner for one user; only its own task touches it after creation."""

    __slots__ = (
        "_backoff",
        "_delivery_retry_at",
        "_delivery_retry_s",
        "_history",
        "_hour",
        "_hour_messages",
        "_owed",
        "_prev_hour_messages",
        "_store_retry_at",
        "_store_retry_s",
        "breaker",
        "delivery_owed",
        "deps",
        "done",
        "language",
        "last_active",
        "mailbox",
        "messages",
        "profile_known",
        "retired",
        "state",
        "stopping",
        "transitions",
        "turn_started",
        "user_id",
    )

    _handlers: ClassVar[dict[type, Handler]] = {}

    def __init__(self, user_id: str, deps: ActorDeps, *, language: Language = "ru") -> None:
        s = deps.settings
        self.user_id = user_id
        self.deps = deps
        self.state: str = Phase.IDLE.value
        self.mailbox: Mailbox[Envelope] = Mailbox(s.mailbox_capacity)
        self.breaker = s.new_breaker()
        self._backoff = Backoff(deps.policy.retry_base_s, deps.policy.retry_max_s)
        self.language: Language = language
        self.profile_known = False
        self.stopping = False
        self.retired = False
        self.done = asyncio.Event()  # set when the loop has exited, however it exited
        now = deps.clock.monotonic()
        self.last_active = now
        self.turn_started = 0.0
        self._history: list[TransitionRecord] = []  # a ring: a deque costs ~600 B empty
        self.transitions = 0
        self.messages = 0
        self._hour = 0
        self._hour_messages = 0
        self._prev_hour_messages = 0
        self._owed: MemoryEvent | None = None
        self._store_retry_at = 0.0
        self._store_retry_s = 0.0
        self.delivery_owed = False
        """Stored replies wait for the front door (a failed send, or found at activation)."""
        self._delivery_retry_at = 0.0
        self._delivery_retry_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def breaker_open(self) -> bool:
        """Guard of the lifecycle table."""
        return self.breaker.open

    @property
    def phase(self) -> Phase:
        return Phase(self.state)

    @property
    def history(self) -> list[TransitionRecord]:
        """The last `HISTORY_SIZE` transitions, oldest first."""
        ring = self._history
        start = self.transitions % HISTORY_SIZE if len(ring) == HISTORY_SIZE else 0
        return ring[start:] + ring[:start]

    @property
    def last_transition(self) -> tuple[float, str, str, str] | None:
        """(monotonic time, from, to, trigger) of the newest transition."""
        if not self._history:
            return None
        r = self._history[(self.transitions - 1) % HISTORY_SIZE]
        return (r.at, r.source.value, r.dest.value, r.trigger.value)

    def on_transition(self, source: Phase, dest: Phase, trigger: Trigger) -> None:
        """Lifecycle callback: record only (history, a span event, an observation)."""
        deps = self.deps
        span = trace.get_current_span()
        record = TransitionRecord(
            self.user_id,
            deps.clock.monotonic(),
            source,
            dest,
            trigger,
            span.get_span_context().trace_id,
        )
        ring = self._history
        if len(ring) < HISTORY_SIZE:
            ring.append(record)
        else:
            ring[self.transitions % HISTORY_SIZE] = record
        self.transitions += 1
        span.add_event(
            "transition", {"from": source.value, "to": dest.value, "trigger": trigger.value}
        )
        deps.observer.record(TransitionMade(source, dest, trigger))
        if deps.feed:
            deps.feed.publish(record)

    def note_message(self, now: float) -> None:
        """Count an accepted message (hourly windows feed the busiest-user gauge)."""
        self.messages += 1
        hour = int(now // 3600)
        if hour != self._hour:
            self._prev_hour_messages = self._hour_messages if hour == self._hour + 1 else 0
            self._hour, self._hour_messages = hour, 0
        self._hour_messages += 1

    def messages_per_hour(self, now: float) -> float:
        """Messages accepted in the trailing hour, estimated from two hourly windows."""
        hour = int(now // 3600)
        left = 1.0 - (now % 3600) / 3600
        if hour == self._hour:
            return self._hour_messages + self._prev_hour_messages * left
        if hour == self._hour + 1:
            return self._hour_messages * left
        return 0.0

    def _fire(self, trigger: Trigger) -> None:
        self.deps.lifecycle.fire(self, trigger)

    def _stopped(self) -> bool:
        return self.stopping  # a call, so type narrowing does not outlive an await

    def stop(self) -> None:
        """Finish the envelope in hand, then exit; waiting messages stay stored, unanswered."""
        self.stopping = True
        self.mailbox.wake()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, retire: Callable[[UserActor], bool]) -> None:
        """Process envelopes until stopped or idle for longer than the idle timeout."""
        clock = self.deps.clock
        current_user.set(self.user_id)  # this task's context only
        if self.delivery_owed:  # replies stored before a crash or an outage go out first
            await self._deliver_owed()
        while not self._stopped():
            envelope = await self.mailbox.take(self._wait_s(clock.monotonic()))
            if self._stopped():  # a waiting envelope is stored: answered after the next start
                return
            if envelope is not None:
                await self._handle(envelope)
                envelope = None  # an idle actor holds no message text
                self.last_active = clock.monotonic()
                continue
            now = clock.monotonic()
            if self._store_retry_at and now >= self._store_retry_at:
                await self._recover_from_store()
            elif self._delivery_retry_at and now >= self._delivery_retry_at:
                await self._deliver_owed()
            elif self.breaker.seconds_until_probe(now) == 0.0:
                await self._probe()
            elif now - self.last_active >= self.deps.settings.idle_timeout_s and retire(self):
                return

    def _wait_s(self, now: float) -> float:
        waits = [self.last_active + self.deps.settings.idle_timeout_s - now]
        if self._store_retry_at:
            waits.append(self._store_retry_at - now)
        if self._delivery_retry_at:
            waits.append(self._delivery_retry_at - now)
        probe = self.breaker.seconds_until_probe(now)
        if probe is not None and self.phase is Phase.DEGRADED:
            waits.append(probe)
        return max(0.0, min(waits))

    async def _handle(self, envelope: Envelope) -> None:
        if envelope.persisted is not None and not await envelope.persisted:
            return  # the caller's store write failed; the caller was told, nothing to answer
        if self._store_retry_at and isinstance(envelope.command, HandleText | HandleVoice):
            return  # stored but the store is down: the recovery sweep will bring it back
        token = otel_context.attach(envelope.context) if envelope.context is not None else None
        try:
            with self.deps.tracer.start_as_current_span("butler.turn") as span:
                span.set_attribute("butler.command", type(envelope.command).__name__)
                handler = self._handlers[type(envelope.command)]
                try:
                    await handler(self, envelope.command, envelope)
                except Exception as exc:  # noqa: BLE001 - the one broad except: answer, settle
                    if envelope.done is not None:
                        envelope.done.set_result(exc)
                    span.record_exception(exc)
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    try:
                        await self._crashed(exc, envelope)
                    except Exception:  # even the apology failed (sink down): keep the actor
                        log.exception("could not answer after a failed turn")
        finally:
            if token is not None:
                otel_context.detach(token)
            self._owed = None
            if envelope.done is not None and not envelope.done.done():
                envelope.done.set_result(None)

    async def _crashed(self, exc: Exception, envelope: Envelope) -> None:
        log.error(
            "turn failed",
            extra={"error_type": type(exc).__name__, "phase": self.state},
            exc_info=not isinstance(exc, TransientError | LLMRejected),
        )
        if isinstance(exc, StoreUnavailable):
            self._store_down()
        phase = self.phase
        if phase is Phase.COMPRESSING:
            self._backoff.failed(self.deps.clock.monotonic())  # a bug must not run every turn
            self._fire(Trigger.COMPRESSION_FAILED)
        elif phase not in RESTING_PHASES:
            self._fire(Trigger.TURN_FAILED)
        owed = self._owed
        if owed is None:
            return
        if not isinstance(exc, StoreUnavailable):
            try:
                text = line("error", self.language, owed.id)
                await self._finish(owed, text, "error", None, envelope)
            except StoreUnavailable:
                self._store_down()
            else:
                return
        # The message stays unanswered in the store; the recovery sweep answers it later.
        try:
            await self._deliver(owed, line("store_down", self.language, owed.id), "error")
        except DeliveryFailed:
            log.warning("store-down notice not delivered")
        now = self.deps.clock.monotonic()
        self.deps.observer.record(
            TurnFinished(owed.source, "error", now - envelope.accepted_at, now - self.turn_started)
        )

    # -- turns -------------------------------------------------------------------------------

    async def _on_text(self, cmd: HandleText, envelope: Envelope) -> None:
        self._owed = cmd.event
        self.turn_started = self.deps.clock.monotonic()
        self._fire(Trigger.HEAR_TEXT)
        await self._answer(cmd.event, envelope)

    async def _on_voice(self, cmd: HandleVoice, envelope: Envelope) -> None:
        deps = self.deps
        self._owed = cmd.event
        self.turn_started = deps.clock.monotonic()
        self._fire(Trigger.HEAR_VOICE)
        try:
            if not cmd.audio or deps.transcriber is None:
                raise BadAudio("the recording is no longer available", "lost")  # noqa: TRY301
            with deps.tracer.start_as_current_span("stt.transcribe"):
                transcript = await deps.transcriber.transcribe(
                    cmd.audio, language_hint=self.language
                )
        except (BadAudio, TranscriberBusy) as exc:
            # The audio itself is not kept: the user is asked to send it again.
            problem = exc.problem if isinstance(exc, BadAudio) else "busy"
            reason = audio_problem(problem, self.language)
            text = line("voice_rejected", self.language, cmd.event.id, reason=reason)
            await self._finish(
                cmd.event, text, "voice_rejected", Trigger.TRANSCRIPTION_FAILED, envelope
            )
            return
        heard = deps.settings.memory_text(transcript.text)
        event = replace(cmd.event, content=heard, tokens=deps.counter.count(heard))
        await self._store([event])
        self._owed = event
        self._fire(Trigger.TRANSCRIBED)
        await self._answer(event, envelope)

    async def _answer(self, event: MemoryEvent, envelope: Envelope) -> None:
        deps = self.deps
        context = await self._load(event)
        profile = context.profile or UserProfile.new(self.user_id, event.created_at, self.language)
        self.language = profile.language
        if not self.breaker.may_try(deps.clock.monotonic()):
            await self._degraded(event, envelope)
            return
        try:
            prompt = self._build(profile, context, event)
        except MessageTooLong as exc:
            text = line("too_long", self.language, event.id, tokens=exc.tokens, budget=exc.budget)
            await self._finish(event, text, "declined", Trigger.DECLINED, envelope)
            return
        try:
            completion = await self._complete(
                prompt.request(deps.prompts.budget.reply), prompt.template_version, profile
            )
        except LLMUnavailable:
            self.breaker.trip(deps.clock.monotonic())
            await self._degraded(event, envelope)
            return
        self.breaker.close()
        await self._finish(event, completion.text, "reply", Trigger.REPLIED, envelope)
        await self._maybe_compress(profile, context.memory.total_events + 1)

    async def _degraded(self, event: MemoryEvent, envelope: Envelope) -> None:
        text = line("degraded", self.language, event.id)
        await self._finish(event, text, "degraded", Trigger.LLM_UNAVAILABLE, envelope)

    async def _finish(
        self,
        event: MemoryEvent,
        text: str,
        status: ReplyKind,
        trigger: Trigger | None,
        envelope: Envelope,
    ) -> None:
        """Store the reply, settle the lifecycle, then hand the reply over."""
        deps = self.deps
        reply_id, stamp = deps.ids.next(deps.clock.now())
        kept = deps.settings.memory_text(text)  # the user still gets the reply as written
        reply = MemoryEvent(
            id=reply_id,
            user_id=self.user_id,
            role="assistant",
            content=kept,
            source=event.source,
            created_at=stamp,
            tokens=deps.counter.count(kept),
            reply_to=event.id,
        )
        await self._store([reply])
        self._owed = None
        if trigger is not None:
            self._fire(trigger)
        await self._send(event, reply_id, text, status)
        now = deps.clock.monotonic()
        deps.observer.record(
            TurnFinished(
                event.source,
                "ok" if status == "reply" else status,  # the seeds' metric label for success
                now - envelope.accepted_at,
                now - self.turn_started,
            )
        )

    async def _deliver(self, event: MemoryEvent, text: str, kind: ReplyKind) -> str:
        """Hand a reply to `event` to the sink; its receipt.

        Raises:
            DeliveryFailed: the front door could not take it now.
        """
        with self.deps.tracer.start_as_current_span("sink.deliver"):
            return await self.deps.sink.deliver(
                OutgoingReply(
                    self.user_id,
                    text,
                    event.id,
                    kind,
                    event.source,
                    heard=event.content if event.source == "voice" else "",
                )
            )

    async def _send(self, event: MemoryEvent, reply_id: str, text: str, kind: ReplyKind) -> None:
        """The outbox: the reply is stored already; send it after any older owed replies,
        then mark it delivered. A failed send leaves it owed, retried with backoff."""
        if self.delivery_owed:
            await self._deliver_owed()  # includes this reply: it is owed in the store too
            return
        try:
            receipt = await self._deliver(event, text, kind)
        except DeliveryFailed:
            self._delivery_failed()
            return
        await self._mark_delivered(reply_id, receipt)

    async def _mark_delivered(self, reply_id: str, receipt: str) -> None:
        try:
            with self.deps.tracer.start_as_current_span("store.mark_delivered"):
                await self.deps.store.mark_delivered(self.user_id, reply_id, receipt)
        except StoreUnavailable:
            # Sent but not marked: after a restart it would be sent once more. Nothing waits.
            log.warning("delivered reply not marked: store unavailable")

    async def _deliver_owed(self) -> None:
        """Send every owed reply of the user, oldest first; stop at the first failure."""
        try:
            owed = await self.deps.store.owed_replies(self.user_id)
        except StoreUnavailable:
            self._delivery_failed()
            return
        for reply in owed:
            # Redelivered as stored: a voice note's quote is not repeated.
            outgoing = OutgoingReply(
                self.user_id, reply.content, reply.reply_to, "reply", reply.source
            )
            try:
                with self.deps.tracer.start_as_current_span("sink.deliver"):
                    receipt = await self.deps.sink.deliver(outgoing)
            except DeliveryFailed:
                self._delivery_failed()
                return
            await self._mark_delivered(reply.id, receipt)
        self.delivery_owed = False
        self._delivery_retry_at = self._delivery_retry_s = 0.0

    def _delivery_failed(self) -> None:
        s = self.deps.settings
        self.delivery_owed = True
        self._delivery_retry_s = min(
            max(self._delivery_retry_s * 2, s.store_retry_s), s.store_retry_max_s
        )
        self._delivery_retry_at = self.deps.clock.monotonic() + self._delivery_retry_s

    # -- port calls, each a span -------------------------------------------------------------

    async def _load(self, event: MemoryEvent) -> TurnContext:
        deps = self.deps
        started = deps.clock.monotonic()
        with deps.tracer.start_as_current_span("store.load_turn"):
            context = await deps.store.load_turn(
                self.user_id, limit=deps.settings.recent_events, before=event.id
            )
        deps.observer.record(ProfileAccessed(write=False, seconds=deps.clock.monotonic() - started))
        return context

    async def _store(self, events: list[MemoryEvent]) -> None:
        with self.deps.tracer.start_as_current_span("store.append"):
            await self.deps.store.append(events)
        self.deps.observer.record(EventsStored(tuple(e.role for e in events)))

    def _build(self, profile: UserProfile, context: TurnContext, event: MemoryEvent) -> Prompt:
        with self.deps.tracer.start_as_current_span("prompt.build") as span:
            prompt = self.deps.prompts.build(
                profile, context.memory.events, event.content, event.tokens
            )
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
        self.deps.observer.record(PromptBuilt(tokens.total, truncated))
        return prompt

    async def _complete(
        self,
        request: CompletionRequest,
        template_version: str,
        cache_for: UserProfile | None = None,
    ) -> Completion:
        """Ask the model; replies (`cache_for` given) go through the response cache."""
        deps = self.deps
        key = ""
        if cache_for is not None and deps.settings.cache_ttl_s > 0:
            key = cache_key(
                template_version=template_version,
                model=deps.settings.model_name,
                profile=cache_for,
                request=request,
            )
            cached = await self._cached(key)
            deps.observer.record(CacheLooked(request.purpose, hit=cached is not None))
            if cached is not None:
                return Completion(cached, "cache", 0, 0, 0)
        completion = await self._call_model(request, template_version)
        if key:
            await self._cache(key, completion.text)
        return completion

    async def _cached(self, key: str) -> str | None:
        with self.deps.tracer.start_as_current_span("cache.get") as span:
            try:
                found = await self.deps.store.cached_answer(key, now=self.deps.clock.now())
            except StoreUnavailable:
                found = None  # a cache that cannot be read is a miss
            span.set_attribute("butler.cache.hit", found is not None)
            return found

    async def _cache(self, key: str, text: str) -> None:
        deps = self.deps
        expires = deps.clock.now() + timedelta(seconds=deps.settings.cache_ttl_s)
        with deps.tracer.start_as_current_span("cache.put"):
            try:
                await deps.store.cache_answer(key, self.user_id, text, expires_at=expires)
            except StoreUnavailable:
                log.warning("answer not cached: store unavailable")

    async def _call_model(self, request: CompletionRequest, template_version: str) -> Completion:
        deps = self.deps
        started = deps.clock.monotonic()
        status, endpoint, usage = "ok", 0, (0, 0)
        with deps.tracer.start_as_current_span("llm.chat") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.max_tokens": request.max_tokens,
                    "gen_ai.request.temperature": request.temperature,
                    "butler.llm.purpose": request.purpose,
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
                    "gen_ai.response.model": completion.model,
                    "gen_ai.usage.input_tokens": completion.prompt_tokens,
                    "gen_ai.usage.output_tokens": completion.completion_tokens,
                    "butler.llm.endpoint": completion.endpoint,
                }
            )
        return completion

    # -- compression -------------------------------------------------------------------------

    async def _on_compress(self, cmd: CompressMemory, envelope: Envelope) -> None:
        deps = self.deps
        if self.phase is not Phase.IDLE:
            return  # degraded: summarising needs the model; the policy retries later
        context = await deps.store.load_turn(self.user_id, limit=0, before="\uffff")
        profile = context.profile
        count = context.memory.total_events
        if profile is not None and (
            deps.policy.due(count) or (cmd.eager and count > deps.policy.keep_last)
        ):
            await self._compress(profile)

    async def _maybe_compress(self, profile: UserProfile, event_count: int) -> None:
        deps = self.deps
        if (
            deps.policy.due(event_count)
            and self._backoff.ready(deps.clock.monotonic())
            and self.phase is Phase.IDLE
        ):
            await self._compress(profile)

    async def _compress(self, profile: UserProfile) -> None:
        deps = self.deps
        started = deps.clock.monotonic()
        self._fire(Trigger.COMPRESS)
        deleted, reason = 0, ""
        with deps.tracer.start_as_current_span("butler.compress") as span:
            try:
                async with asyncio.timeout(deps.policy.timeout_s):
                    deleted = await self._compress_once(profile)
            except (TransientError, LLMRejected, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, SummaryRejected) else type(exc).__name__
                span.set_attribute("butler.compression.failure", reason)
        seconds = deps.clock.monotonic() - started
        if reason:
            self._backoff.failed(deps.clock.monotonic())
            self._fire(Trigger.COMPRESSION_FAILED)
            deps.observer.record(CompressionFinished("error", seconds, deleted, reason))
        else:
            self._backoff.succeeded()
            self._fire(Trigger.COMPRESSED)
            deps.observer.record(CompressionFinished("ok", seconds, deleted))

    async def _compress_once(self, profile: UserProfile) -> int:
        deps = self.deps
        policy = deps.policy
        candidates = await deps.store.events_before(self.user_id, keep_last=policy.keep_last)
        pending = [e.event_id for e in self.mailbox if e.event_id]
        selection = compression.select(candidates, profile, stop_before=min(pending, default=""))
        if not selection.to_summarise:
            if not selection.covered:
                return 0
            return await deps.store.apply_summary(profile, selection.covered)
        request = compression.summary_request(
            deps.summarize, profile, selection.to_summarise, policy
        )
        completion = await self._complete(request, deps.summarize.version)
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

    # -- recovery ----------------------------------------------------------------------------

    async def _probe(self) -> None:
        deps = self.deps
        with deps.tracer.start_as_current_span("llm.probe") as span:
            healthy = await deps.llm.probe()
            span.set_attribute("butler.llm.healthy", healthy)
            if healthy:
                self.breaker.close()
                self._fire(Trigger.PROBE_SUCCEEDED)
            else:
                self.breaker.trip(deps.clock.monotonic())

    async def _on_reset(self, cmd: ResetActor, envelope: Envelope) -> None:
        if cmd.erase:
            with self.deps.tracer.start_as_current_span("store.erase_user"):
                await self.deps.store.erase_user(self.user_id)
            self.profile_known = False
            self.deps.observer.record(ProfileAccessed(write=True))
        self.breaker.close()
        self._backoff.succeeded()
        self._fire(Trigger.RESET)

    async def _on_update_profile(self, cmd: UpdateProfile, envelope: Envelope) -> None:
        deps = self.deps
        now = deps.clock.now()
        with deps.tracer.start_as_current_span("store.save_profile"):
            profile = await deps.store.get_profile(self.user_id)
            profile = cmd.apply(profile or UserProfile.new(self.user_id, now, self.language), now)
            await deps.store.save_profile(profile)
        self.profile_known = True
        self.language = profile.language
        deps.observer.record(ProfileAccessed(write=True))

    def _store_down(self) -> None:
        s = self.deps.settings
        self._store_retry_s = min(
            max(self._store_retry_s * 2, s.store_retry_s), s.store_retry_max_s
        )
        self._store_retry_at = self.deps.clock.monotonic() + self._store_retry_s

    async def _recover_from_store(self) -> None:
        """The store failed earlier: re-read what is owed a reply and queue it again."""
        try:
            pending = await self.deps.store.unanswered(self.user_id)
        except StoreUnavailable:
            self._store_down()
            return
        self._store_retry_at = 0.0
        self._store_retry_s = 0.0
        queued = {e.event_id for e in self.mailbox}
        for event in reversed(pending):
            if event.id not in queued:
                self.mailbox.push_front(recovered(event, self.deps.clock.monotonic()))

    @classmethod
    def register(cls, kind: type, handler: Handler) -> None:
        cls._handlers[kind] = handler


def recovered(event: MemoryEvent, now: float) -> Envelope:
    """An envelope for a stored message still owed a reply (after a restart or outage)."""
    command: UserMessage
    if event.source == "voice" and not event.content:
        command = HandleVoice(event, b"")  # the audio did not survive; ask for it again
    else:
        command = HandleText(event)
    return Envelope(command, None, now)


UserActor.register(HandleText, UserActor._on_text)
UserActor.register(HandleVoice, UserActor._on_voice)
UserActor.register(CompressMemory, UserActor._on_compress)
UserActor.register(ResetActor, UserActor._on_reset)
UserActor.register(UpdateProfile, UserActor._on_update_profile)
