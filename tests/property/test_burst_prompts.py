"""Over any burst, the prompt of each turn holds the conversation as it stands when the turn
starts: every earlier message, each followed by its reply, roles alternating.

A burst is drawn as how many messages arrive before each turn starts (at least the turn's
own); replies are stored when their turn ends, after whatever arrived meanwhile. The store
is a real SQLite file and the memory store; the prompt is the product's builder.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bootstrap.wiring import Templates
from adapters.storage.memory import MemoryStore
from adapters.storage.sqlite import SqliteStore
from engine.domain import EventIds, MemoryEvent, Role, UserProfile
from engine.ports import Store
from engine.prompt import Budget, PromptBuilder
from engine.tokens import CalibratedEstimator

COUNTER = CalibratedEstimator()
TEMPLATES = Templates.load()
BUILDER = PromptBuilder(
    TEMPLATES.persona, TEMPLATES.memory_summary, COUNTER, Budget(memory=100_000, total=200_000)
)
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@st.composite
def bursts(draw: st.DrawFn) -> list[int]:
    """For each turn k, how many messages have arrived when it starts (k+1 .. total)."""
    total = draw(st.integers(1, 9))
    arrived, plan = 0, []
    for k in range(total):
        arrived = draw(st.integers(max(arrived, k + 1), total))
        plan.append(arrived)
    return plan


async def replay(store: Store, plan: list[int]) -> list[list[tuple[str, str]]]:
    """Run the burst's turns; each turn's chat (role, content) without the system line."""
    ids, now = EventIds(), T0
    user = "tg:1"
    profile = UserProfile.new(user, T0)

    def event(role: Role, content: str, reply_to: str = "") -> MemoryEvent:
        nonlocal now
        now += timedelta(milliseconds=1)
        event_id, stamp = ids.next(now)
        return MemoryEvent(event_id, user, role, content, "text", stamp, 3, reply_to)

    messages: list[MemoryEvent] = []
    chats: list[list[tuple[str, str]]] = []
    for k, arrived in enumerate(plan):
        while len(messages) < arrived:
            m = event("user", f"сообщение {len(messages)}")
            await store.append([m], profile=profile if not messages else None)
            messages.append(m)
        turn = await store.load_turn(user, limit=1000, before=messages[k].id)
        prompt = BUILDER.build(profile, turn.memory.events, messages[k].content, 3)
        chats.append([(m.role, m.content) for m in prompt.messages[1:]])
        await store.append([event("assistant", f"ответ {k}", messages[k].id)])
    return chats


def expected(k: int) -> list[tuple[str, str]]:
    chat: list[tuple[str, str]] = []
    for n in range(k):
        chat += [("user", f"сообщение {n}"), ("assistant", f"ответ {n}")]
    return [*chat, ("user", f"сообщение {k}")]


@settings(max_examples=60, deadline=None)
@given(plan=bursts())
def test_every_turn_of_a_burst_sees_the_conversation_as_it_stands(plan: list[int]) -> None:
    async def both() -> None:
        chats = await replay(MemoryStore(), plan)
        assert chats == [expected(k) for k in range(len(plan))]
        with tempfile.TemporaryDirectory() as folder:
            sqlite = await SqliteStore.open(Path(folder) / "butler.sqlite3")
            try:
                chats = await replay(sqlite, plan)
            finally:
                await sqlite.close()
        assert chats == [expected(k) for k in range(len(plan))]

    asyncio.run(both())
