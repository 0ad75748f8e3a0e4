"""The registry: activates a user's actor on first message, passivates idle ones, drains.

It owns every actor task through one anyio task group, keeps strong references to actors,
and persists each message before `tell` returns (durable from acceptance). With an
`Ownership`, an actor lives only under a claim: claimed before it activates, its writes
fenced by that lease, renewed for all live actors in one round every `renew_every_s`, and
released at passivation and drain (`actors.leases` holds the rounds and the hand-overs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup
from opentelemetry import context as otel_context

from actors import intake, leases
from actors.deps import ActorDeps, ActorSettings
from actors.envelope import Envelope, abandon, recovered, settled
from actors.history import TransitionFeed
from actors.observe import ActorCrashed
from actors.tickets import Accepted, ActorView, HandedOver, Rejected, Repeated, Ticket, view_of
from actors.user_actor import UserActor
from engine.budget import PERIODS
from engine.domain import Language, Source
from engine.errors import OwnedElsewhere, ShuttingDown
from engine.lifecycle import Phase
from engine.messages import Command, HandleText, HandleVoice
from engine.persona import line
from engine.ports import Clock, Lease, Ownership

log = logging.getLogger(__name__)

__all__ = ["Accepted", "ActorView", "HandedOver", "Registry", "Rejected", "Repeated", "Ticket"]


class Registry:
    """All live actors of the process. Use as `async with Registry(deps) as registry:`."""

    def __init__(
        self,
        deps: ActorDeps,
        ownership: Ownership | None = None,
        *,
        hand_over: bool = True,
        on_lost: Callable[[str], None] | None = None,
        adopt: bool = False,
    ) -> None:
        """Args:
        deps: what every actor shares.
        ownership: how this process claims users; None serves every user unclaimed (one
            process alone on its store, as in tests).
        hand_over: for a user another process serves, store the message and hand it to that
            process (a service); False raises `OwnedElsewhere` instead (the terminal).
        on_lost: called with the user id when a live actor's claim was lost.
        adopt: take over, now and then, users a dead process left with messages unanswered
            (a service; a terminal serves its one user only).
        """
        self._deps = deps
        self.leases = leases.Claims(
            self, ownership, hand_over=hand_over, on_lost=on_lost, adopt=adopt
        )
        self._actors: dict[str, UserActor] = {}
        self._activating: dict[str, asyncio.Future[UserActor]] = {}
        self._erasing: dict[str, asyncio.Event] = {}
        self._group: TaskGroup | None = None
        self._closing = False
        self._idle = anyio.Event()

    async def __aenter__(self) -> Self:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self.leases.start(self._group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()
        self.leases.stop()
        assert self._group is not None
        await self._group.__aexit__(exc_type, exc, tb)

    # -- intake ------------------------------------------------------------------------------

    async def tell_text(
        self,
        user_id: str,
        text: str,
        *,
        source: Source = "text",
        language: Language | None = None,
        origin: str = "",
        joins: bool = False,
    ) -> Ticket:
        """Store `text` as the user's message and queue it; never waits for a mailbox slot.

        `origin` names the delivery it came in (`tg:msg:<message_id>`): a second message with
        the same origin is recognised in the store and answered `Repeated`, not again.
        `joins`: over the user's rate; answered with the turn ahead of it (`HandleText`).

        Raises:
            ShuttingDown: the registry is draining.
            StoreUnavailable: the message could not be stored (nothing was accepted).
            OwnedElsewhere: another process serves the user and this registry does not hand
                messages over (nothing was stored).
        """
        try:
            actor = await self._actor(user_id, language)
        except OwnedElsewhere as exc:
            return await self.leases.hand_over(exc, user_id, text, source, language, origin)
        event = intake.new_event(self._deps, actor, text, source, origin)
        command = HandleText(event, joins=joins)
        return await intake.accept(self._deps, actor, command, event, language)

    async def tell_voice(
        self, user_id: str, audio: bytes, *, language: Language | None = None, origin: str = ""
    ) -> Ticket:
        """Store a voice message (its transcript is filled in later) and queue it.

        Handed to another process that serves the user, the audio stays here: the owner asks
        the user to send it again."""
        try:
            actor = await self._actor(user_id, language)
        except OwnedElsewhere as exc:
            return await self.leases.hand_over(exc, user_id, "", "voice", language, origin)
        event = intake.new_event(self._deps, actor, "", "voice", origin)
        return await intake.accept(self._deps, actor, HandleVoice(event, audio), event, language)

    async def tell(self, user_id: str, command: Command) -> Ticket:
        """Queue a non-message command (compress, reset) behind the user's messages."""
        return await self._offer(user_id, command, None)

    async def ask(
        self, user_id: str, command: Command
    ) -> tuple[Ticket, asyncio.Future[Exception | None]]:
        """Queue `command` like `tell`; the future resolves once the actor has handled it
        (with None, or the error the command ended with)."""
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        ticket = await self._offer(user_id, command, done)
        if isinstance(ticket, Rejected):
            done.cancel()
        return ticket, done

    async def _offer(
        self, user_id: str, command: Command, done: asyncio.Future[Exception | None] | None
    ) -> Ticket:
        actor = await self._actor(user_id, None)
        now = self._deps.clock.monotonic()
        envelope = Envelope(command, otel_context.get_current(), now, done=done)
        if not actor.mailbox.offer(envelope):
            return Rejected(line("busy", actor.language))
        return Accepted("")

    async def wake(self, user_id: str) -> bool:
        """Activate the user's actor if it is not live (it picks up unanswered messages).

        Raises:
            OwnedElsewhere: another process serves the user.
        """
        if user_id in self._actors:
            return False
        await self._actor(user_id, None)
        return True

    async def tell_edit(self, user_id: str, event_id: str, text: str) -> Ticket | None:
        """Give a message that still waits in the mailbox new text (the user edited it).

        Returns None when the message is no longer waiting (answered or in hand): the caller
        then sends the edit as a new message, a correction.

        Raises:
            StoreUnavailable: the new text could not be stored (the old text is kept).
        """
        actor = self._actors.get(user_id)
        return (
            None if actor is None else await intake.edit_waiting(self._deps, actor, event_id, text)
        )

    async def erase(self, user_id: str) -> None:
        """Forget a user: stop the actor, dropping what waits for it, and delete every record.

        The one erase path (`/forget` and the admin's reset with erase). The turn in hand is
        finished; nothing else waiting is answered, and whoever `ask`ed gets `ShuttingDown`.
        Messages that arrive meanwhile wait for the erase to finish, then start afresh.

        Raises:
            StoreUnavailable: nothing was deleted; what waited is answered on the next start.
            OwnedElsewhere: another process serves the user (nothing was deleted).
        """
        while (gate := self._erasing.get(user_id)) is not None:
            await gate.wait()
        gate = asyncio.Event()
        self._erasing[user_id] = gate
        try:
            pending = self._activating.get(user_id)
            if pending is not None:
                with suppress(Exception):
                    await asyncio.shield(pending)
            actor = self._actors.get(user_id)
            if actor is not None:
                actor.stop()
                await actor.done.wait()
                await settled(actor.mailbox)  # no message accepted before lands after it
            await self.leases.released(user_id)
            with self._deps.tracer.start_as_current_span("store.erase_user"):
                await self.leases.erase(user_id)
        finally:
            del self._erasing[user_id]
            gate.set()

    async def ask_and_wait(self, user_id: str, command: Command) -> bool:
        """Queue a non-message command and wait until the actor has handled it.

        Returns:
            False if the mailbox was full (nothing queued), True once handled.

        Raises:
            ShuttingDown: the registry is draining.
        """
        ticket, done = await self.ask(user_id, command)
        if isinstance(ticket, Rejected):
            return False
        await done
        return True

    # -- activation and passivation ----------------------------------------------------------

    async def _actor(self, user_id: str, language: Language | None) -> UserActor:
        while True:
            if self._closing:
                raise ShuttingDown("the butler is shutting down")
            if (gate := self._erasing.get(user_id)) is not None:
                await gate.wait()
                continue
            actor = self._actors.get(user_id)
            if actor is None:
                pending = self._activating.get(user_id)
                actor = await (
                    asyncio.shield(pending) if pending else self._activate(user_id, language)
                )
            if not actor.retired:
                return actor

    async def _activate(self, user_id: str, language: Language | None) -> UserActor:
        deps = self._deps
        future: asyncio.Future[UserActor] = asyncio.get_running_loop().create_future()
        self._activating[user_id] = future
        lease: Lease | None = None
        try:
            await self.leases.released(user_id)
            lease = await self.leases.claim(user_id)
            with deps.tracer.start_as_current_span("actor.activate"):
                profile = await deps.store.get_profile(user_id)
                owed = await deps.store.unanswered(user_id)
                undelivered = await deps.store.owed_replies(user_id)
                if lease is not None:  # another process may have written last, its clock ahead
                    await leases.ids_after_newest(deps, user_id)
            own = deps if lease is None else replace(deps, store=deps.store.fenced(lease))
            actor = UserActor(
                user_id, own, language=profile.language if profile else (language or "ru")
            )
            actor.profile_known = profile is not None
            actor.delivery_owed = bool(undelivered)
            now = deps.clock.monotonic()
            for event in owed:
                actor.mailbox.offer(recovered(event, now), force=True)
            self._start(actor)
            if lease is not None:
                self.leases.hold(user_id, lease)
        except BaseException as exc:
            if lease is not None:
                await self.leases.give_up(lease)
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(actor)
            return actor
        finally:
            del self._activating[user_id]

    def _start(self, actor: UserActor) -> None:
        assert self._group is not None, "use the registry as an async context manager"
        self._actors[actor.user_id] = actor
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._group.start_soon(self._supervise, actor, name=f"actor:{len(self._actors)}")

    async def _supervise(self, actor: UserActor) -> None:
        """Run an actor; a crash of its loop removes it and restarts it if messages wait."""
        crashed = False
        try:
            await actor.run(self._retire)
        except Exception:  # a bug in the loop itself: keep the registry and the other actors
            crashed = True
            log.exception("actor loop crashed")
            self._deps.observer.record(ActorCrashed())
        finally:
            self._forget(actor)
            abandon(actor.mailbox)
            try:
                await self.leases.after_actor(actor)
            finally:
                actor.done.set()
        if crashed and len(actor.mailbox) and not self._closing:
            # Its messages are stored; a fresh actor recovers them from the store.
            try:
                await self._activate(actor.user_id, actor.language)
            except OwnedElsewhere:  # taken meanwhile: the new owner answers what is stored
                self.leases.watch(actor.user_id)

    def _retire(self, actor: UserActor) -> bool:
        """Passivate `actor` if nothing waits for it (called by the actor, synchronously)."""
        if len(actor.mailbox) or actor.stopping:
            return False
        actor.retired = True
        self._forget(actor)
        return True

    def _forget(self, actor: UserActor) -> None:
        actor.retired = True
        if self._actors.get(actor.user_id) is actor:
            del self._actors[actor.user_id]
            self.leases.releasing(actor.user_id)  # before any new activation can claim
        if not self._actors:
            self._idle.set()

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Stop intake, let each actor finish the envelope in hand, then stop it.

        Messages still waiting are already stored and are answered after the next start.
        """
        self._closing = True
        for actor in list(self._actors.values()):
            actor.stop()
        with anyio.move_on_after(timeout_s):
            if self._actors:
                await self._idle.wait()
            await self.leases.all_released()
        if self._actors and self._group is not None:
            log.warning("drain deadline passed", extra={"actors_left": len(self._actors)})
            self._group.cancel_scope.cancel()

    # -- inspection --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._actors)

    def get(self, user_id: str) -> UserActor | None:
        return self._actors.get(user_id)

    def live(self) -> list[UserActor]:
        """The live actors, in activation order."""
        return list(self._actors.values())

    @property
    def deps(self) -> ActorDeps:
        return self._deps

    @property
    def closing(self) -> bool:
        return self._closing

    def views(self) -> list[ActorView]:
        now = self._deps.clock.monotonic()
        return [view_of(a, now) for a in self._actors.values()]

    def count_by_phase(self) -> dict[Phase, int]:
        counts = dict.fromkeys(Phase, 0)
        for actor in self._actors.values():
            counts[actor.phase] += 1
        return counts

    @property
    def feed(self) -> TransitionFeed:
        """Live transitions of every actor, for subscribers that must never slow actors."""
        return self._deps.feed

    @property
    def clock(self) -> Clock:
        return self._deps.clock

    @property
    def settings(self) -> ActorSettings:
        """The tunables every actor runs with (the kill switch, the token budgets)."""
        return self._deps.settings

    def budget_levels(self) -> dict[tuple[str, str], int]:
        """Live actors whose last turn found them over 80 % of a token budget, by (level,
        period): ("reduced" | "exhausted", "day" | "month")."""
        counts: dict[tuple[str, str], int] = {
            (level, period): 0 for level in ("reduced", "exhausted") for period in PERIODS
        }
        for actor in self._actors.values():
            state = actor.budget
            if state is not None and state.period is not None and state.level != "normal":
                counts[state.level, state.period] += 1
        return counts

    def mailbox_depths(self) -> list[int]:
        return [len(a.mailbox) for a in self._actors.values()]
