"""A real registry and real actors (scripted LLM, fake transcriber and in-memory store behind
the ports) against the reference model in `specs/model.py`, driven by Hypothesis.

The event loop runs on the test's clock (`tests/support/virtual_loop.py`): advancing it fires
the mailbox timers, so background probes, store retries and passivation run under the model.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.deps import ActorSettings
from actors.machine import Lifecycle
from actors.registry import Accepted, Registry, Rejected
from actors.tickets import Ticket
from engine.compression import CompressionPolicy
from engine.domain import Language
from engine.errors import IllegalTransition, StoreUnavailable, TranscriberBusy
from engine.lifecycle import Trigger
from engine.messages import CompressMemory, ResetActor
from engine.ports import Completion, CompletionRequest, Transcript
from specs import invariants
from specs.model import Compress, ConversationModel, Msg, Outcome, Reset, Rules, Voice
from specs.strategies import (
    burst_kinds,
    edit_choices,
    lateness,
    message_texts,
    time_steps,
    user_ids,
)
from tests.fakes import CollectingSink, FakeTranscriber, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import make_deps
from tests.support.virtual_loop import VirtualLoop

RULES = Rules(capacity=4, threshold=8, keep_last=3, cooldown_s=30.0, max_cooldown_s=120.0)
_TAG = re.compile(r"\b(u\d)# m(\d+)\b")


class CheckedStore(MemoryStore):
    """Fails the test the moment a deletion is not covered by the summary being saved."""

    def __init__(self) -> None:
        super().__init__()
        self.uncovered: list[str] = []

    async def apply_summary(self, profile: Any, event_ids: Any) -> int:
        self.uncovered += invariants.deletions_covered(event_ids, profile.summary_through)
        return await super().apply_summary(profile, event_ids)


class WatchedLLM(ScriptedLLM):
    """Records what each reply call showed, and if one user ever has two calls in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.overlaps: list[str] = []
        self.shown: dict[str, list[tuple[int, int, str]]] = defaultdict(list)

    async def complete(self, request: CompletionRequest) -> Completion:
        tags = list(_TAG.finditer(request.messages[-1].content))
        found = tags[-1] if tags else None  # unanswered messages before it share its turn
        user = found.group(1) if found else "?"
        if request.purpose == "reply" and found:
            history = sum(1 for m in request.messages[:-1] if m.role != "system")
            self.shown[user].append((int(found.group(2)), history, request.messages[-1].content))
        self.in_flight[user] += 1
        if self.in_flight[user] > 1:
            self.overlaps.append(user)
        try:
            await asyncio.sleep(0)  # noqa: TID251 - a yield point, not a wait on time
            return await super().complete(request)
        finally:
            self.in_flight[user] -= 1


class SwitchTranscriber(FakeTranscriber):
    """The fake transcriber, and a "no free slot" answer for audio marked busy."""

    BUSY = b"busy:"

    async def transcribe(self, audio: bytes, *, language_hint: Language) -> Transcript:
        if audio.startswith(self.BUSY):
            raise TranscriberBusy("no transcription slot free")
        return await super().transcribe(audio, language_hint=language_hint)


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
        self.clock = ManualClock()
        self.loop = VirtualLoop(self.clock)
        self.start_mono = self.clock.mono
        self.model = ConversationModel(RULES)
        self.store = CheckedStore()
        self.llm = WatchedLLM()
        self.sink = CollectingSink()
        self.lifecycle = WatchedLifecycle()
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.ids: dict[int, str] = {}
        self.edited: dict[int, str] = {}
        self.tag = 0
        self.registry: Registry | None = None

    @initialize()
    def start(self) -> None:
        self._open()

    def _open(self) -> None:
        deps = make_deps(
            store=self.store,
            llm=self.llm,
            sink=self.sink,
            clock=self.clock,
            transcriber=SwitchTranscriber(capacity=3),
            settings=ActorSettings(
                mailbox_capacity=RULES.capacity,
                recent_events=RULES.keep_last,
                idle_timeout_s=RULES.idle_s,
                breaker_cooldown_s=RULES.cooldown_s,
                breaker_max_cooldown_s=RULES.max_cooldown_s,
                store_retry_s=RULES.store_retry_s,
                store_retry_max_s=RULES.store_retry_max_s,
                cache_ttl_s=0,  # a cached answer would hide what the model was shown
            ),
            policy=CompressionPolicy(
                threshold=RULES.threshold,
                keep_last=RULES.keep_last,
                retry_base_s=RULES.compress_retry_s,
                retry_max_s=RULES.compress_retry_max_s,
            ),
        )
        object.__setattr__(deps, "lifecycle", self.lifecycle)
        self.registry = registry = Registry(deps)
        self.closing = self.loop.create_future()

        async def host() -> None:  # a task group is entered and left in one task
            async with registry:
                await self.closing

        self.host = self.loop.create_task(host())
        self.loop.quiesce()

    def _close(self) -> None:
        self.closing.set_result(None)
        self.loop.run(_wait(self.host))
        self.registry = None

    def _settle(self) -> None:
        """Let every actor do what it owes and what its timers make due; compare."""
        self.loop.quiesce()
        self.model.settle()
        by_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for reply in self.sink.replies:
            by_user[reply.user_id].append((reply.reply_to, reply.kind))
        for user_id, user in self.model.users.items():
            want = [(self.ids[n], kind) for n, kind in user.answered]
            assert by_user.get(user_id, []) == want, user_id
            shown = [(n, h) for n, h, _ in self.llm.shown.get(user_id, [])]
            assert shown == user.calls, ("what the model was shown", user_id)
            live = self.registry.get(user_id) if self.registry else None
            assert (live is not None) == user.active, ("live or passivated", user_id)
            if live is not None:
                assert live.state == self.model.phase(user_id), user_id
                breaker = (live.breaker.open, live.breaker.current_cooldown_s)
                assert breaker == (user.breaker_open, user.cooldown_s), ("breaker", user_id)
            stored = len(self.store.events.get(user_id, {}))
            assert stored == len(user.memory), (user_id, stored, user.memory)
        kinds = {kind for user in self.model.users.values() for _, kind in user.answered}
        for kind in sorted(kinds):
            event(f"answered: {kind}")
        if any(u.activations > 1 for u in self.model.users.values()):
            event("an actor came back (after passivation or a restart)")
        for name in ("passivations", "probes", "half_open_turns"):
            if getattr(self.model, name):
                event(f"some {name}")
        if any(u.store_retry_at for u in self.model.users.values()):
            event("a store retry was pending")
        for n, _, content in (c for calls in self.llm.shown.values() for c in calls):
            if n in self.edited:
                assert content.endswith(self.edited[n]), "the model saw the text before the edit"

    # -- rules -------------------------------------------------------------------------------

    @rule(user=user_ids, kinds=burst_kinds, text=message_texts, edit=edit_choices, late=lateness)
    def send_burst(
        self, user: str, kinds: list[Voice], text: str, edit: int | None, late: float
    ) -> None:
        self._burst(user, kinds, text, edit, late=late)
        self._settle()

    @precondition(lambda self: self.model.store_up)
    @rule(user=user_ids, kinds=burst_kinds, text=message_texts)
    def send_burst_then_restart(self, user: str, kinds: list[Voice], text: str) -> None:
        self._burst(user, kinds, text, None, then_stop=True)
        self._close()
        self.model.restart()
        self.model.advance(1.0)  # a new process starts later: event ids keep sorting by time
        self.clock.advance(1.0)
        self._open()
        self._settle()

    def _burst(
        self,
        user: str,
        kinds: list[Voice],
        text: str,
        edit: int | None,
        *,
        late: float = 0.0,
        then_stop: bool = False,
    ) -> None:
        assert self.registry is not None
        registry = self.registry
        tags = list(range(self.tag, self.tag + len(kinds)))
        self.tag += len(kinds)

        async def one(tag: int, kind: Voice) -> Ticket | None:
            words = f"{user}# m{tag} {text}"
            try:
                if not kind:
                    return await registry.tell_text(user, words)
                audio = {
                    "heard": FakeTranscriber.speech(words, "ru"),
                    "bad": b"not audio at all",
                    "busy": SwitchTranscriber.BUSY + words.encode(),
                }[kind]
                return await registry.tell_voice(user, audio)
            except StoreUnavailable:
                return None

        async def burst() -> list[Ticket | None]:
            # No await here yields to the actors, so they have not started these turns (and
            # the drain, a stop at that moment, finds them all waiting).
            tickets = [await one(tag, kind) for tag, kind in zip(tags, kinds, strict=True)]
            if edit is not None and edit < len(kinds) and not kinds[edit]:
                ticket = tickets[edit]
                if isinstance(ticket, Accepted):
                    new = f"{user}# m{tags[edit]} edited {text}"
                    assert await registry.tell_edit(user, ticket.event_id, new) is not None
                    self.edited[tags[edit]] = new
            if then_stop:
                await registry.drain()
            # Time may pass before the actor takes the burst: a cool-down can end while its
            # messages wait, so the first of them finds the breaker half-open, before a probe.
            self.clock.advance(late)
            return tickets

        tickets = self.loop.run(burst())
        for tag, kind, ticket in zip(tags, kinds, tickets, strict=True):
            outcome = self.model.offer(user, Msg(tag, kind))
            self._check_ticket(outcome, ticket)
            if isinstance(ticket, Accepted):
                self.ids[tag] = ticket.event_id
                self.accepted[user].append(ticket.event_id)
        self.model.advance(late)

    @staticmethod
    def _check_ticket(outcome: Outcome, ticket: Ticket | None) -> None:
        assert ticket is None or isinstance(ticket, Accepted | Rejected), ticket  # no repeats
        got: Outcome = (
            "accepted"
            if isinstance(ticket, Accepted)
            else "rejected"
            if isinstance(ticket, Rejected)
            else "failed"
        )
        assert got == outcome, ("the registry's answer differs from the model's", ticket)

    @rule(user=user_ids)
    def reset(self, user: str) -> None:
        self._command(user, ResetActor(), Reset())

    @rule(user=user_ids, eager=st.booleans())
    def compress(self, user: str, eager: bool) -> None:
        self._command(user, CompressMemory(eager=eager), Compress(eager))

    def _command(self, user: str, command: Any, expected: Reset | Compress) -> None:
        assert self.registry is not None
        registry = self.registry

        async def tell() -> Ticket | None:
            try:
                return await registry.tell(user, command)
            except StoreUnavailable:
                return None

        ticket = self.loop.run(tell())
        self._check_ticket(self.model.offer(user, expected), ticket)
        self._settle()

    @rule(user=user_ids, kinds=burst_kinds, text=message_texts)
    def send_burst_in_llm_outage(self, user: str, kinds: list[Voice], text: str) -> None:
        """A short outage: the burst is answered degraded, then the model is back, so the
        cool-down ends in a probe or in a half-open turn (whichever comes first)."""
        was_up = self.model.llm_up
        self.llm_goes_down()
        self._burst(user, kinds, text, None)
        self._settle()
        if was_up:
            self.llm_comes_back()

    @rule()
    def llm_goes_down(self) -> None:
        self.llm.down = True
        self.model.llm_up = False

    @rule()
    def llm_comes_back(self) -> None:
        self.llm.down = False
        self.model.llm_up = True

    @rule()
    def store_goes_down(self) -> None:
        self.store.down = True
        self.model.store_up = False

    @rule()
    def store_comes_back(self) -> None:
        self.store.down = False
        self.model.store_up = True

    @rule(seconds=time_steps)
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.advance(seconds)
        self._settle()

    # -- invariants --------------------------------------------------------------------------

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
    def degraded_recovers_without_a_new_message(self) -> None:
        if self.registry is None:
            return
        now = self.clock.monotonic()
        for user_id in self.model.users:
            live = self.registry.get(user_id)
            if live is not None:
                due = live.breaker.seconds_until_probe(now)
                degraded = live.state == "degraded"
                assert not invariants.overdue_probe(degraded, due, llm_up=not self.llm.down)

    @invariant()
    def compression_deletes_only_summarised(self) -> None:
        assert self.store.uncovered == []

    @invariant()
    def no_illegal_trigger(self) -> None:
        assert self.lifecycle.illegal == []

    def teardown(self) -> None:
        try:
            if self.registry is not None:
                self._close()
        finally:
            self.loop.close()


async def _wait(task: Any) -> None:
    await task


ActorVersusModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestActorVersusModel = ActorVersusModel.TestCase
