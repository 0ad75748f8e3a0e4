"""The outbox: a reply is stored owed, handed to the sink after any older owed replies, and
marked delivered with the sink's receipt; a failed send is retried with backoff."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors import turns
from engine.domain import MemoryEvent
from engine.errors import (
    DeliveryFailed,
    StoreUnavailable,
)
from engine.ports import OutgoingReply, ReplyKind

if TYPE_CHECKING:
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


async def send(
    actor: UserActor, event: MemoryEvent, reply_id: str, text: str, kind: ReplyKind
) -> None:
    """The outbox: the reply is stored already; send it after any older owed replies,
    then mark it delivered. A failed send leaves it owed, retried with backoff."""
    if actor.delivery_owed:
        await deliver_owed(actor)  # includes this reply: it is owed in the store too
        return
    try:
        receipt = await turns.deliver(actor, event, text, kind)
    except DeliveryFailed:
        delivery_failed(actor)
        return
    await mark_delivered(actor, reply_id, receipt)


async def mark_delivered(actor: UserActor, reply_id: str, receipt: str) -> None:
    try:
        with actor.deps.tracer.start_as_current_span("store.mark_delivered"):
            await actor.deps.store.mark_delivered(actor.user_id, reply_id, receipt)
    except StoreUnavailable:
        # Sent but not marked: after a restart it would be sent once more. Nothing waits.
        log.warning("delivered reply not marked: store unavailable")


async def deliver_owed(actor: UserActor) -> None:
    """Send every owed reply of the user, oldest first; stop at the first failure."""
    try:
        owed = await actor.deps.store.owed_replies(actor.user_id)
    except StoreUnavailable:
        delivery_failed(actor)
        return
    for reply in owed:
        # Redelivered as stored: a voice note's quote is not repeated.
        outgoing = OutgoingReply(
            actor.user_id, reply.content, reply.reply_to, "reply", reply.source
        )
        try:
            with actor.deps.tracer.start_as_current_span("sink.deliver"):
                receipt = await actor.deps.sink.deliver(outgoing)
        except DeliveryFailed:
            delivery_failed(actor)
            return
        await mark_delivered(actor, reply.id, receipt)
    actor.delivery_owed = False
    actor.delivery_retry_at = actor.delivery_retry_s = 0.0


def delivery_failed(actor: UserActor) -> None:
    s = actor.deps.settings
    actor.delivery_owed = True
    actor.delivery_retry_s = min(
        max(actor.delivery_retry_s * 2, s.store_retry_s), s.store_retry_max_s
    )
    actor.delivery_retry_at = actor.deps.clock.monotonic() + actor.delivery_retry_s
