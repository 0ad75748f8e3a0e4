"""A real registry and real actors (scripted LLM and in-memory store behind the ports)
against the reference model in `specs/model.py`, driven by Hypothesis."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.deps import ActorSettings
from actors.machine import Lifecycle
from actors.registry import Accepted, Registry, Ticket
from engine.compression import CompressionPolicy
from engine.errors import IllegalTransition
from engine.lifecycle import Trigger
from engine.ports import Completion, CompletionRequest
from specs import invariants
from specs.model import ConversationModel, Rules
from specs.strategies import bursts, message_texts, time_steps, user_ids
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM, echo_reply
from tests.helpers import make_deps

T = TypeVar("T")
RULES = Rules(capacity=4, threshold=8, keep_last=3, cooldown_s=30.0, max_cooldown_s=120.0)
_USER_TAG = re.compile(r"\b(u\d)#")


class CheckedStore(MemoryStore):
    """Fails the test the moment a deletion is not covered by the summary being saved."""

    def __init__(self) -> None:
        super().__init__()
        self.uncovered: list[str] = []

    async def apply_summary(self, profile: Any, event_ids: Any) -> int:
        self.uncovered += invariants.deletions_covered(event_ids, profile.summary_through)
        return await super().apply_summary(profile, event_ids)


class WatchedLLM(ScriptedLLM):
    """Yields inside each call and records if one user ever has two calls in flight."""

    def __init__(self) -> None:
        super().__init__(script=echo_reply)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.overlaps: list[str] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        found = _USER_TAG.search(request.messages[-1].content)
        user = found.group(1) if found else "?"
        self.in_flight[user] += 1
        if self.in_flight[user] > 1:
            self.overlaps.append(user)
        try:
            await asyncio.sleep(0)  # noqa: TID251 - a yield point, not a wait on time
            return await super().complete(request)
        finally:
            self.in_flight[user] -= 1


class WatchedLifecycle(Lifecycle):
    """Records illegal triggers even though the actor's broad except would absorb them."""

    def __init__(self) -> None:
        super().__init__()
        self.illegal: list[str] = []

    def fire(self, record: Any, trigger: Trigger) -> Any:
        try:
            return super().fire(record, trigger)
        except IllegalTransition as exc:
            self.illegal.append(str(exc))
            raise


class ActorVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.model = ConversationModel(RULES)
        self.store = CheckedStore()
        self.llm = WatchedLLM()
        self.sink = CollectingSink()
        self.clock = ManualClock()
        self.start_mono = self.clock.mono
        self.lifecycle = WatchedLifecycle()
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.ids: dict[int, str] = {}
        self.registry: Registry | None = None

    def run(self, coro: Coroutine[Any, Any, T] | asyncio.Future[T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize()
    def start(self) -> None:
        self._open()

    def _open(self) -> None:
        deps = make_deps(
            store=self.store,
            llm=self.llm,
            sink=self.sink,
            clock=self.clock,
            settings=ActorSettings(
                mailbox_capacity=RULES.capacity,
                recent_events=RULES.keep_last,
                breaker_cooldown_s=RULES.cooldown_s,
                breaker_max_cooldown_s=RULES.max_cooldown_s,
            ),
            policy=CompressionPolicy(threshold=RULES.threshold, keep_last=RULES.keep_last),
        )
        object.__setattr__(deps, "lifecycle", self.lifecycle)
        registry = Registry(deps)
        opened, self.closing = asyncio.Event(), asyncio.Event()

        async def host() -> None:  # a task group is entered and left in one task
            async with registry:
                opened.set()
                await self.closing.wait()

        self.host = self.loop.create_task(host())
        self.run(opened.wait())
        self.registry = registry

    def _close(self) -> None:
        assert self.registry is not None
        self.closing.set()
        self.run(self.host)
        self.registry = None

    def _settle(self) -> None:
        """Let every actor answer what it owes, then compare replies with the model."""
        self.model.settle()
        expected = sum(len(u.answered) for u in self.model.users.values())
        self.run(self.sink.wait_for(expected, timeout=5.0))
        assert len(self.sink.replies) == expected, "a reply the model did not expect"
        by_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for reply in self.sink.replies:
            by_user[reply.user_id].append((reply.reply_to, reply.kind))
        for user_id, user in self.model.users.items():
            want = [(self.ids[n], kind) for n, kind in user.answered]
            assert by_user.get(user_id, []) == want, user_id
            live = self.registry.get(user_id) if self.registry else None
            if live is not None:
                assert live.state == self.model.phase(user_id), user_id
            stored = len(self.store.events.get(user_id, {}))
            assert stored == len(user.memory), (user_id, stored, user.memory)

    @rule(user=user_ids, n=bursts, text=message_texts)
    def send_burst(self, user: str, n: int, text: str) -> None:
        self._settle()
        self._burst(user, n, text)
        self._settle()

    @rule(user=user_ids, n=bursts, text=message_texts)
    def send_burst_then_restart(self, user: str, n: int, text: str) -> None:
        self._settle()
        self._burst(user, n, text, then_stop=True)
        self._close()
        self.model.restart()
        # A new process starts later than the old one stopped: event ids keep sorting by time.
        self.clock.current += timedelta(seconds=1)
        self._open()

    def _burst(self, user: str, n: int, text: str, *, then_stop: bool = False) -> None:
        assert self.registry is not None
        registry = self.registry

        async def burst() -> list[Ticket]:
            # No await here yields to the actors, so they have not started these turns when
            # the drain (a stop at that moment) begins.
            tickets = [await registry.tell_text(user, f"{user}# {text}") for _ in range(n)]
            if then_stop:
                await registry.drain()
            return tickets

        tickets = self.run(burst())
        for ticket in tickets:
            number = self.model.send(user)
            if number is None:
                assert not isinstance(ticket, Accepted), "accepted beyond the mailbox bound"
                continue
            assert isinstance(ticket, Accepted), "refused although the mailbox had room"
            self.ids[number] = ticket.event_id
            self.accepted[user].append(ticket.event_id)

    @rule()
    def llm_goes_down(self) -> None:
        self._settle()
        self.llm.down = True
        self.model.llm_up = False

    @rule()
    def llm_comes_back(self) -> None:
        self._settle()
        self.llm.down = False
        self.model.llm_up = True

    @rule(seconds=time_steps)
    def time_passes(self, seconds: float) -> None:
        self._settle()
        self.clock.advance(seconds)
        self.model.now = self.clock.mono - self.start_mono

    @invariant()
    def no_message_answered_twice(self) -> None:
        assert invariants.at_most_one_reply(r.reply_to for r in self.sink.replies) == []

    @invariant()
    def replies_in_fifo_order_per_user(self) -> None:
        for user, accepted in self.accepted.items():
            answered = [r.reply_to for r in self.sink.replies if r.user_id == user]
            assert invariants.fifo(accepted, answered)

    @invariant()
    def never_two_turns_per_user(self) -> None:
        assert self.llm.overlaps == []

    @invariant()
    def compression_deletes_only_summarised(self) -> None:
        assert self.store.uncovered == []

    @invariant()
    def no_illegal_trigger(self) -> None:
        assert self.lifecycle.illegal == []

    def teardown(self) -> None:
        try:
            if self.registry is not None:
                self._settle()
                self._close()
        finally:
            self.loop.close()


ActorVersusModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestActorVersusModel = ActorVersusModel.TestCase
