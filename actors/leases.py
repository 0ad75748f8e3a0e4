"""The registry's claims on users: taken before an actor activates, renewed for every live
actor in one round, released when it passivates; messages for a user another process serves
are stored here and handed to that process through the store, and retried until answered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from actors.envelope import Envelope
from actors.observe import ClaimRefused, LeasesRenewed, LeaseTakenOver, OwnershipLost
from actors.tickets import Accepted, HandedOver, Repeated, Ticket
from engine.domain import Language, MemoryEvent, Source, TurnContext, UserProfile
from engine.errors import DuplicateMessage, OwnedElsewhere, StoreUnavailable
from engine.messages import CollectStored
from engine.ports import Lease, Ownership

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.deps import ActorDeps
    from actors.registry import Registry
    from actors.user_actor import UserActor

log = logging.getLogger(__name__)


async def ids_after_newest(deps: ActorDeps, user_id: str) -> TurnContext:
    """Make this process's next event ids sort after the user's newest stored event, whoever
    wrote it; returns the profile and that event."""
    context = await deps.store.load_turn(user_id, limit=1, before="\uffff")
    for newest in context.memory.events:
        deps.ids.after(newest.id)
    return context


ADOPT_EVERY = 3
"""Rounds between looks for users left by a process that died (once per time to live)."""


class Claims:
    """What a registry holds under its `Ownership` (inert without one)."""

    def __init__(
        self,
        registry: Registry,
        ownership: Ownership | None,
        *,
        hand_over: bool,
        on_lost: Callable[[str], None] | None,
        adopt: bool = False,
    ) -> None:
        self._registry = registry
        self.ownership = ownership
        self._hand_over = hand_over
        self._on_lost = on_lost
        self._adopt = adopt
        self._rounds = 0
        self._held: dict[str, Lease] = {}
        """User id -> the lease its live actor writes under."""
        self._releasing: dict[str, tuple[Lease, asyncio.Future[None]]] = {}
        """Leases of actors that ended, until released: a new claim waits for the release."""
        self.handed: set[str] = set()
        """Users with messages stored here for another process; retried every round."""
        self._wake = anyio.Event()
        self._stopped = False

    # -- the renewal loop --------------------------------------------------------------------

    def start(self, group: TaskGroup) -> None:
        if self.ownership is not None:
            group.start_soon(self._run, name="lease-renewal")

    def stop(self) -> None:
        """End the loop (after the drain: every actor has ended and released)."""
        self._stopped = True
        self._wake.set()

    def stopped(self) -> bool:
        return self._stopped  # a call, so type narrowing does not outlive an await

    async def _run(self) -> None:
        assert self.ownership is not None
        while not self.stopped():
            # A full interval after each round: a slow store is not hammered with rounds.
            with anyio.move_on_after(self.ownership.renew_every_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self.stopped():
                return
            try:
                await self.renew()
            except Exception:  # a bug of one round must not end the renewals of every user
                log.exception("lease renewal round failed")

    def held(self, user_id: str) -> Lease | None:
        return self._held.get(user_id)

    def count(self) -> int:
        return len(self._held)

    async def renew(self) -> None:
        """One round: renew every live actor's claim (stopping the actors whose claim was
        lost, collecting what was handed to the others), then retry the hand-overs."""
        ownership = self.ownership
        if ownership is None:
            return
        observer = self._registry.deps.observer
        users = list(self._held)
        old = [self._held[user_id] for user_id in users]
        if old:
            try:
                renewed = await ownership.renew(old)
            except StoreUnavailable:
                log.warning("leases not renewed: the store is unavailable")
                observer.record(LeasesRenewed(0, 0, len(old)))
                renewed = None
            if renewed is not None:
                self._apply(users, old, renewed)
        await self._retry_handed()
        self._rounds += 1
        if self._adopt and self._rounds % ADOPT_EVERY == 0:
            await self.adopt_orphans()

    def _apply(self, users: list[str], old: list[Lease], renewed: list[Lease | None]) -> None:
        counts = [0, 0, 0]
        for user_id, before, after in zip(users, old, renewed, strict=True):
            if self._held.get(user_id) is not before:
                continue  # released or claimed again meanwhile
            if after is None:
                counts[1] += 1
                self._lost(user_id)
                continue
            counts[0 if after is not before else 2] += 1
            self._held[user_id] = after
            if after.nudges > before.nudges:
                self._collect(user_id)
        self._registry.deps.observer.record(LeasesRenewed(*counts))

    def _lost(self, user_id: str) -> None:
        del self._held[user_id]
        actor = self._registry.get(user_id)
        if actor is not None:
            actor.lease_lost = True
            actor.stop()

    def _collect(self, user_id: str) -> None:
        actor = self._registry.get(user_id)
        if actor is not None:
            # At the head: what was stored elsewhere is older than what waits here, mostly.
            envelope = Envelope(CollectStored(), None, self._registry.deps.clock.monotonic())
            actor.mailbox.push_front(envelope)

    # -- claims of actors --------------------------------------------------------------------

    async def claim(self, user_id: str) -> Lease | None:
        """The lease a new actor of `user_id` will write under (None without ownership).

        Raises:
            OwnedElsewhere: another process serves the user.
        """
        if self.ownership is None:
            return None
        lease = await self.ownership.claim(user_id)
        if lease.taken_from:
            log.info("took over a user from a process whose lease expired")
            self._registry.deps.observer.record(LeaseTakenOver())
        return lease

    def hold(self, user_id: str, lease: Lease) -> None:
        self._held[user_id] = lease

    async def give_up(self, lease: Lease) -> None:
        """Release a claim whose actor never started (its activation failed)."""
        if self.ownership is not None:
            try:
                await self.ownership.release(lease)
            except StoreUnavailable:
                log.warning("a claim was not released; it expires by itself")

    def releasing(self, user_id: str) -> None:
        """The user's actor ended: its lease is released next (synchronously noted, so a new
        activation cannot claim before the release and then lose it to the release)."""
        lease = self._held.pop(user_id, None)
        if lease is not None and user_id not in self._releasing:
            self._releasing[user_id] = (lease, asyncio.get_running_loop().create_future())

    async def released(self, user_id: str) -> None:
        """Wait until the lease of the user's previous actor, if any, has been released."""
        pending = self._releasing.get(user_id)
        if pending is not None:
            await asyncio.shield(pending[1])

    async def all_released(self) -> None:
        for _, done in list(self._releasing.values()):
            await asyncio.shield(done)

    async def after_actor(self, actor: UserActor) -> None:
        """Release the ended actor's lease; a lost one is reported and its messages handed
        to the new owner."""
        pending = self._releasing.get(actor.user_id)
        if pending is not None and self.ownership is not None:
            lease, done = pending
            try:
                if not actor.lease_lost:
                    await self.ownership.release(lease)
            except StoreUnavailable:
                log.warning("a lease was not released; it expires by itself")
            finally:
                del self._releasing[actor.user_id]
                done.set_result(None)
        if actor.lease_lost:
            self._registry.deps.observer.record(OwnershipLost())
            log.warning("lease lost: another process serves the user now")
            if self._on_lost is not None:
                self._on_lost(actor.user_id)
            if self._hand_over:  # what was in hand or waited here is stored: theirs now
                await self._nudge(actor.user_id)

    # -- erasing -----------------------------------------------------------------------------

    async def erase(self, user_id: str) -> None:
        """Delete the user's records under a claim of this process, so that no other process
        is serving the user meanwhile.

        Raises:
            OwnedElsewhere: another process serves the user (nothing was deleted).
        """
        store = self._registry.deps.store
        lease = await self.claim(user_id)
        if lease is None:
            await store.erase_user(user_id)
            return
        try:
            await store.fenced(lease).erase_user(user_id)
        finally:
            await self.give_up(lease)

    # -- hand-overs --------------------------------------------------------------------------

    async def hand_over(  # noqa: PLR0917 - tell_text's arguments, passed on
        self,
        refused: OwnedElsewhere,
        user_id: str,
        text: str,
        source: Source,
        language: Language | None,
        origin: str,
    ) -> Ticket:
        """Store a message for a user another process serves, and tell that process.

        Raises:
            OwnedElsewhere: `refused`, when this registry does not hand messages over.
            StoreUnavailable: the message could not be stored (nothing was accepted).
        """
        observer = self._registry.deps.observer
        if not self._hand_over:
            observer.record(ClaimRefused(handed_over=False))
            raise refused
        deps = self._registry.deps
        context = await ids_after_newest(deps, user_id)  # the owner's clock may run ahead
        event_id, stamp = deps.ids.next(deps.clock.now())
        content = deps.settings.memory_text(text)
        tokens = deps.counter.count(content)
        event = MemoryEvent(event_id, user_id, "user", content, source, stamp, tokens, "", origin)
        created = None
        if context.profile is None:
            created = UserProfile.new(user_id, stamp, language or "ru")
        try:
            with deps.tracer.start_as_current_span("store.append"):
                await deps.store.append([event], profile=created)
        except DuplicateMessage as exc:
            return Repeated(exc.event_id)
        observer.record(ClaimRefused(handed_over=True))
        await self._nudge(user_id)
        if self._registry.get(user_id) is not None:
            return Accepted(event.id)  # nobody served the user after all: served here
        return HandedOver(event.id)

    async def _nudge(self, user_id: str) -> None:
        """Tell the owner of `user_id` to collect what is stored; if nobody owns it now, serve
        it here. Either way the user is retried every round until nothing waits."""
        assert self.ownership is not None
        self.handed.add(user_id)
        try:
            if await self.ownership.hand_over(user_id) is not None:
                return
        except StoreUnavailable:
            return  # the next round tries again
        await self._serve_here(user_id)

    async def adopt_orphans(self) -> int:
        """Serve here the users a dead or stuck process left with messages unanswered or
        replies undelivered (a service's job: nobody else would until the user writes again).
        Returns how many were taken over."""
        if self.ownership is None:
            return 0
        registry = self._registry
        store = registry.deps.store
        adopted = 0
        try:
            for user_id in await self.ownership.orphaned():
                if registry.closing:
                    break
                if registry.get(user_id) is not None:
                    continue
                if await store.unanswered(user_id) or await store.owed_replies(user_id):
                    self.handed.add(user_id)
                    await self._serve_here(user_id)
                    adopted += user_id not in self.handed
        except StoreUnavailable:
            log.warning("orphaned users not looked for: the store is unavailable")
        return adopted

    def watch(self, user_id: str) -> None:
        """Retry `user_id` every round until nothing of theirs waits unanswered: claimed here
        once no other process serves it (an owner that died: after its lease expires)."""
        if self.ownership is not None:
            self.handed.add(user_id)

    async def _retry_handed(self) -> None:
        registry = self._registry
        for user_id in list(self.handed):
            if registry.closing:
                return
            if registry.get(user_id) is not None:
                self.handed.discard(user_id)  # live here: its activation read the store
                continue
            try:
                waiting = await registry.deps.store.unanswered(user_id)
            except StoreUnavailable:
                continue
            if not waiting:
                self.handed.discard(user_id)  # the owner answered
                continue
            await self._serve_here(user_id)

    async def _serve_here(self, user_id: str) -> None:
        """Activate the user here if nobody serves it (the actor answers what is stored)."""
        try:
            await self._registry.wake(user_id)
        except OwnedElsewhere:
            return  # the owner serves it, or its lease expires and a later round claims it
        except StoreUnavailable:
            return
        self.handed.discard(user_id)
