"""Intake: a user message becomes an event, takes its mailbox slot, and is stored before the
caller hears it was accepted; an edit of a message still waiting rewrites it in place."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context

from actors.deps import ActorDeps
from actors.envelope import Envelope
from actors.observe import MailboxRejected
from actors.tickets import Accepted, Rejected, Repeated, Ticket
from engine.domain import Language, MemoryEvent, Source, UserProfile
from engine.errors import DuplicateMessage
from engine.messages import HandleText, UserMessage
from engine.persona import line

if TYPE_CHECKING:
    from actors.user_actor import UserActor


def new_event(
    deps: ActorDeps, actor: UserActor, text: str, source: Source, origin: str
) -> MemoryEvent:
    """The user event for `text`, with an id that sorts after every earlier one."""
    event_id, stamp = deps.ids.next(deps.clock.now())
    text = deps.settings.memory_text(text)  # the one entry point of user text
    return MemoryEvent(
        id=event_id,
        user_id=actor.user_id,
        role="user",
        content=text,
        source=source,
        created_at=stamp,
        tokens=deps.counter.count(text),
        origin=origin,
    )


async def accept(
    deps: ActorDeps,
    actor: UserActor,
    command: UserMessage,
    event: MemoryEvent,
    language: Language | None,
) -> Ticket:
    """Queue `command` and store its event; `Repeated` when its origin is stored already."""
    persisted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    envelope = Envelope(command, otel_context.get_current(), deps.clock.monotonic(), persisted)
    # The slot is taken before the write so mailbox order is acceptance order.
    if not actor.mailbox.offer(envelope):
        deps.observer.record(MailboxRejected())
        return Rejected(line("busy", actor.language, event.id))
    actor.note_message(envelope.accepted_at)
    profile = None
    if not actor.profile_known:
        profile = UserProfile.new(actor.user_id, event.created_at, language or actor.language)
    try:
        with deps.tracer.start_as_current_span("store.append"):
            await deps.store.append([event], profile=profile)
    except DuplicateMessage as exc:
        persisted.set_result(False)
        return Repeated(exc.event_id)
    except BaseException:
        persisted.set_result(False)
        raise
    persisted.set_result(True)
    actor.profile_known = True
    return Accepted(event.id)


async def edit_waiting(
    deps: ActorDeps, actor: UserActor, event_id: str, text: str
) -> Ticket | None:
    """Rewrite a message still waiting in `actor`'s mailbox; None when it is not waiting."""
    old = next((e for e in actor.mailbox if waiting_text(e, event_id)), None)
    if old is None:
        return None
    assert isinstance(old.command, HandleText)
    event = replace(old.command.event, content=text, tokens=deps.counter.count(text))
    with deps.tracer.start_as_current_span("store.append"):
        await deps.store.append([event])
    envelope = Envelope(HandleText(event), otel_context.get_current(), old.accepted_at)
    if not actor.mailbox.replace(lambda e: e is old, envelope):
        # Taken while the new text was written: stored, so the turn's answer stands and
        # the next prompt shows the edited text in the history.
        return None
    return Accepted(event.id)


def waiting_text(envelope: Envelope, event_id: str) -> bool:
    """An envelope for text message `event_id` whose store write has committed."""
    command = envelope.command
    persisted = envelope.persisted
    return (
        isinstance(command, HandleText)
        and command.event.id == event_id
        and (persisted is None or (persisted.done() and persisted.result()))
    )
