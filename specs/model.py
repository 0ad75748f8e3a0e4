"""A plain reference model of what users see: which messages and commands are accepted, in
what order and how they are answered, what each model call is shown, and what memory remains.

It re-states the rules independently of `actors/` (its own breaker and back-off arithmetic,
its own compression count, its own reading of the actor's timers), so the stateful property
test can compare the real registry and actors against it. Time moves only when told; every
actor then does, at that instant, whatever its timers make due (store retry, probe, retire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

Kind = Literal["reply", "degraded", "voice_rejected"]
Voice = Literal["", "heard", "bad", "busy", "lost"]  # "" is a text message
Outcome = Literal["accepted", "rejected", "failed"]  # failed: the store refused the write


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the real actor runs with in the test."""

    capacity: int
    threshold: int
    keep_last: int
    cooldown_s: float
    max_cooldown_s: float
    idle_s: float = 150.0
    store_retry_s: float = 2.0
    store_retry_max_s: float = 60.0
    compress_retry_s: float = 60.0
    compress_retry_max_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Msg:
    number: int
    voice: Voice = ""


@dataclass(frozen=True, slots=True)
class Reset:
    """ResetActor without erasing: the breaker closes, the back-off forgets."""


@dataclass(frozen=True, slots=True)
class Compress:
    eager: bool = False


@dataclass(frozen=True, slots=True)
class Unstored:
    """A mailbox slot taken by a message whose store write failed: skipped, not answered."""


Item = Msg | Reset | Compress | Unstored


@dataclass(slots=True)
class UserModel:
    """One user: the mailbox, messages owed but in no mailbox, replies, memory, timers."""

    queue: list[Item] = field(default_factory=list)
    stranded: list[Msg] = field(default_factory=list)
    answered: list[tuple[int, Kind]] = field(default_factory=list)
    calls: list[tuple[int, int]] = field(default_factory=list)  # (message, history shown)
    memory: list[tuple[str, int]] = field(default_factory=list)  # ("u"|"r", message number)
    active: bool = False
    activations: int = 0
    last_active: float = 0.0
    breaker_open: bool = False
    opened_at: float = 0.0
    cooldown_s: float = 0.0
    compress_failures: int = 0
    compress_not_before: float = 0.0
    store_retry_at: float = 0.0
    store_retry_s: float = 0.0

    def fresh_actor(self, now: float) -> None:
        """A new actor: closed breaker, no back-off, no store retry."""
        self.breaker_open, self.cooldown_s = False, 0.0
        self.compress_failures, self.compress_not_before = 0, 0.0
        self.store_retry_at, self.store_retry_s = 0.0, 0.0
        self.last_active = now


@dataclass(slots=True)
class ConversationModel:
    """All users, the availability of the model and the store, and the time."""

    rules: Rules
    users: dict[str, UserModel] = field(default_factory=dict)
    llm_up: bool = True
    store_up: bool = True
    now: float = 0.0
    passivations: int = 0
    probes: int = 0
    half_open_turns: int = 0

    def user(self, user_id: str) -> UserModel:
        return self.users.setdefault(user_id, UserModel())

    # -- intake ------------------------------------------------------------------------------

    def offer(self, user_id: str, item: Msg | Reset | Compress) -> Outcome:
        """A message or command arrives; the registry activates the actor first."""
        user = self.user(user_id)
        if not user.active:
            if not self.store_up:
                return "failed"  # activation reads the profile
            user.active = True
            user.activations += 1
            user.fresh_actor(self.now)
            user.queue = [_recovered(m) for m in user.stranded]
            user.stranded = []
        if len(user.queue) >= self.rules.capacity:
            return "rejected"
        if isinstance(item, Msg):
            if not self.store_up:
                user.queue.append(Unstored())
                return "failed"
            user.memory.append(("u", item.number))
        user.queue.append(item)
        return "accepted"

    def restart(self) -> None:
        """The process stops before its actors ran: stored messages stay owed, commands go."""
        for user in self.users.values():
            user.stranded += [m for m in user.queue if isinstance(m, Msg)]
            user.queue = []
            user.active = False

    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- what the actors do ------------------------------------------------------------------

    def settle(self) -> None:
        """Every live actor works until it waits: its mailbox, then any timer due now."""
        for user in self.users.values():
            while user.active:
                if user.queue:
                    self._handle(user, user.queue.pop(0))
                    user.last_active = self.now
                elif user.store_retry_at and self.now >= user.store_retry_at:
                    self._recover(user)
                elif user.breaker_open and self.now >= user.opened_at + user.cooldown_s:
                    self._probe(user)
                elif self.now - user.last_active >= self.rules.idle_s:
                    user.active = False  # passivated; what it knew lives in the store
                    self.passivations += 1
                else:
                    break

    def phase(self, user_id: str) -> str:
        return "degraded" if self.user(user_id).breaker_open else "idle"

    def _handle(self, user: UserModel, item: Item) -> None:
        if isinstance(item, Unstored):
            return
        if isinstance(item, Reset):
            user.breaker_open, user.cooldown_s = False, 0.0
            user.compress_failures, user.compress_not_before = 0, 0.0
            return
        if isinstance(item, Compress):
            self._on_compress(user, item)
            return
        if user.store_retry_at:
            user.stranded.append(item)  # stored; the recovery sweep brings it back
            return
        if item.voice in ("bad", "busy", "lost"):
            self._reply(user, item.number, "voice_rejected")
            return
        self._answer(user, item.number)

    def _answer(self, user: UserModel, number: int) -> None:
        cooling = user.breaker_open and self.now - user.opened_at < user.cooldown_s
        if cooling:
            self._reply(user, number, "degraded")
            return
        self.half_open_turns += user.breaker_open
        user.calls.append((number, _shown(user.memory, number, self.rules.keep_last)))
        if not self.llm_up:
            self._trip(user)
            self._reply(user, number, "degraded")
            return
        user.breaker_open, user.cooldown_s = False, 0.0
        self._reply(user, number, "reply")
        if len(user.memory) > self.rules.threshold and self.now >= user.compress_not_before:
            self._compress(user)

    def _reply(self, user: UserModel, number: int, kind: Kind) -> None:
        user.answered.append((number, kind))
        user.memory.append(("r", number))

    def _trip(self, user: UserModel) -> None:
        user.cooldown_s = (
            min(user.cooldown_s * 2, self.rules.max_cooldown_s)
            if user.breaker_open
            else self.rules.cooldown_s
        )
        user.breaker_open = True
        user.opened_at = self.now

    def _probe(self, user: UserModel) -> None:
        self.probes += 1
        if self.llm_up:
            user.breaker_open, user.cooldown_s = False, 0.0
        else:
            self._trip(user)

    def _store_down(self, user: UserModel) -> None:
        r = self.rules
        user.store_retry_s = min(max(user.store_retry_s * 2, r.store_retry_s), r.store_retry_max_s)
        user.store_retry_at = self.now + user.store_retry_s

    def _recover(self, user: UserModel) -> None:
        if not self.store_up:
            self._store_down(user)
            return
        user.store_retry_at, user.store_retry_s = 0.0, 0.0
        user.queue = [_recovered(m) for m in user.stranded] + user.queue
        user.stranded = []

    def _on_compress(self, user: UserModel, cmd: Compress) -> None:
        if user.breaker_open:
            return  # degraded: summarising needs the model
        if not self.store_up:
            self._store_down(user)
            return
        count = len(user.memory)
        if count > self.rules.threshold or (cmd.eager and count > self.rules.keep_last):
            self._compress(user)

    def _compress(self, user: UserModel) -> None:
        """Everything but the newest `keep_last` entries goes, up to the first owed message."""
        cut = max(0, len(user.memory) - self.rules.keep_last)
        owed = {m.number for m in (*user.queue, *user.stranded) if isinstance(m, Msg)}
        for index, (kind, number) in enumerate(user.memory[:cut]):
            if kind == "u" and number in owed:
                cut = index
                break
        if cut and not self.llm_up:
            user.compress_failures += 1
            delay = self.rules.compress_retry_s * 2 ** (user.compress_failures - 1)
            user.compress_not_before = self.now + min(delay, self.rules.compress_retry_max_s)
            return
        user.compress_failures, user.compress_not_before = 0, 0.0
        del user.memory[:cut]


def _recovered(message: Msg) -> Msg:
    """A stored message brought back from the store: a voice note's audio did not survive."""
    return Msg(message.number, "lost") if message.voice else message


def _shown(memory: list[tuple[str, int]], number: int, limit: int) -> int:
    """How many chat messages come before message `number` in its prompt.

    The conversation as it stands when the turn starts: earlier messages and the replies to
    them, each reply right after its message however late it was stored; the newest `limit`
    of those; a leading reply without its message left out; then runs of one role make one
    chat message, the new message joining a run of unanswered ones before it.
    """
    before = sorted((n, kind == "r") for kind, n in memory if n < number)[-limit:] if limit else []
    while before and before[0][1]:
        before.pop(0)
    roles = [is_reply for _, is_reply in before] + [False]
    return sum(1 for a, b in pairwise(roles) if a != b)  # runs of one role, less the new one
