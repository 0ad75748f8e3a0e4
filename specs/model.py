"""A plain reference model of what users see: which messages are accepted, in what order
they are answered, whether by the model or in degraded mode, and how much memory remains.

It re-states the rules independently of `actors/` (its own breaker arithmetic, its own
compression count), so the stateful property test can compare the real actor against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["reply", "degraded"]


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the real actor runs with in the test."""

    capacity: int
    threshold: int
    keep_last: int
    cooldown_s: float
    max_cooldown_s: float


@dataclass(slots=True)
class UserModel:
    """One user: messages owed a reply, replies expected, memory as a list of entries."""

    owed: list[int] = field(default_factory=list)
    answered: list[tuple[int, Kind]] = field(default_factory=list)
    memory: list[tuple[str, int]] = field(default_factory=list)  # ("u"|"r", message number)
    active: bool = False
    breaker_open: bool = False
    opened_at: float = 0.0
    cooldown_s: float = 0.0


@dataclass(slots=True)
class ConversationModel:
    """All users, the model's availability and the time."""

    rules: Rules
    users: dict[str, UserModel] = field(default_factory=dict)
    llm_up: bool = True
    now: float = 0.0
    next_message: int = 0

    def user(self, user_id: str) -> UserModel:
        return self.users.setdefault(user_id, UserModel())

    def send(self, user_id: str) -> int | None:
        """A message arrives; returns its number if accepted, None if the mailbox is full."""
        user = self.user(user_id)
        user.active = True  # activation queues every owed message first
        if len(user.owed) >= self.rules.capacity:
            return None
        number = self.next_message
        self.next_message += 1
        user.owed.append(number)
        user.memory.append(("u", number))
        return number

    def settle(self) -> None:
        """Every active user's actor answers everything owed, in order."""
        for user in self.users.values():
            if not user.active:
                continue
            while user.owed:
                self._answer(user, user.owed.pop(0))

    def restart(self) -> None:
        """The process stops: actors (and their breakers) are gone, owed messages stay."""
        for user in self.users.values():
            user.active = False
            user.breaker_open = False
            user.cooldown_s = 0.0

    def phase(self, user_id: str) -> str:
        return "degraded" if self.user(user_id).breaker_open else "idle"

    def _answer(self, user: UserModel, number: int) -> None:
        cooling = user.breaker_open and self.now - user.opened_at < user.cooldown_s
        if cooling or not self.llm_up:
            if not cooling:  # tried and failed: open, or stay open with a longer cool-down
                user.cooldown_s = (
                    min(user.cooldown_s * 2, self.rules.max_cooldown_s)
                    if user.breaker_open
                    else self.rules.cooldown_s
                )
                user.breaker_open = True
                user.opened_at = self.now
            user.answered.append((number, "degraded"))
            user.memory.append(("r", number))
            return
        user.breaker_open = False
        user.cooldown_s = 0.0
        user.answered.append((number, "reply"))
        user.memory.append(("r", number))
        if len(user.memory) > self.rules.threshold:
            self._compress(user)

    def _compress(self, user: UserModel) -> None:
        """Everything but the newest `keep_last` entries goes, up to the first owed message."""
        cut = max(0, len(user.memory) - self.rules.keep_last)
        owed = set(user.owed)
        for index, (kind, number) in enumerate(user.memory[:cut]):
            if kind == "u" and number in owed:
                cut = index
                break
        del user.memory[:cut]
