"""Getting back to work by itself: the store-down backoff that re-queues what is owed a
reply, and the half-open probe that leaves `degraded` when the model answers again."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.envelope import Envelope, recovered
from engine.errors import (
    StoreUnavailable,
)
from engine.lifecycle import Trigger
from engine.messages import CollectStored

if TYPE_CHECKING:
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


def store_down(actor: UserActor) -> None:
    s = actor.deps.settings
    actor.store_retry_s = min(max(actor.store_retry_s * 2, s.store_retry_s), s.store_retry_max_s)
    actor.store_retry_at = actor.deps.clock.monotonic() + actor.store_retry_s


async def recover_from_store(actor: UserActor) -> None:
    """The store failed earlier: re-read what is owed a reply and queue it again."""
    try:
        pending = await actor.deps.store.unanswered(actor.user_id)
    except StoreUnavailable:
        store_down(actor)
        return
    actor.store_retry_at = 0.0
    actor.store_retry_s = 0.0
    queued = {e.event_id for e in actor.mailbox}
    for event in reversed(pending):
        if event.id not in queued:
            actor.mailbox.push_front(recovered(event, actor.deps.clock.monotonic()))


async def on_collect(actor: UserActor, cmd: CollectStored, envelope: Envelope) -> None:
    """Another process stored messages for this user (a hand-over): queue those not held."""
    await recover_from_store(actor)


async def probe(actor: UserActor) -> None:
    deps = actor.deps
    with deps.tracer.start_as_current_span("llm.probe") as span:
        healthy = await deps.llm.probe()
        span.set_attribute("butler.llm.healthy", healthy)
        if healthy:
            actor.breaker.close()
            actor.fire(Trigger.PROBE_SUCCEEDED)
        else:
            actor.breaker.trip(deps.clock.monotonic())
