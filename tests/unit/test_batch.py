"""Turns over bursts: each prompt holds the conversation as it stands, replies included;
lines written in one breath share a turn; messages over the rate join the turn ahead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from actors.deps import ActorSettings
from actors.observe import MessagesJoined
from actors.registry import Accepted, Registry
from adapters.bootstrap.clock import SystemClock
from engine.ports import CompletionRequest
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM
from tests.helpers import Recorder, make_deps

pytestmark = pytest.mark.anyio


def _registry(
    store: MemoryStore,
    llm: ScriptedLLM,
    sink: CollectingSink,
    observer: Recorder | None = None,
    **settings: float,
) -> Registry:
    deps = make_deps(
        store=store,
        llm=llm,
        sink=sink,
        clock=SystemClock(),
        observer=observer,
        settings=ActorSettings(cache_ttl_s=0, **settings),  # type: ignore[arg-type]
    )
    return Registry(deps)


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


def _replies(llm: ScriptedLLM) -> list[CompletionRequest]:
    return [c for c in llm.calls if c.purpose == "reply"]


def _chat(request: CompletionRequest) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.messages if m.role != "system"]


async def test_each_prompt_of_a_burst_holds_the_replies_before_it():
    store, sink, gate = MemoryStore(), CollectingSink(), asyncio.Event()
    llm = ScriptedLLM(script=lambda r: f"ответ на «{r.messages[-1].content}»", gate=gate)
    async with _registry(store, llm, sink) as registry:
        for n in range(5):  # all five wait behind the first turn
            assert isinstance(await registry.tell_text("u", f"строка {n}"), Accepted)
        await _until(lambda: len(llm.calls) == 1)
        gate.set()
        await sink.wait_for(5)
    for k, request in enumerate(_replies(llm)):
        want = []
        for n in range(k):
            want += [("user", f"строка {n}"), ("assistant", f"ответ на «строка {n}»")]
        assert _chat(request) == [*want, ("user", f"строка {k}")], k
    assert await store.unanswered("u") == []


async def test_lines_written_in_one_breath_are_answered_as_one_turn():
    store, sink, llm, seen = MemoryStore(), CollectingSink(), ScriptedLLM(), Recorder()
    async with _registry(store, llm, sink, seen, coalesce_s=1.0) as registry:
        tickets = [await registry.tell_text("u", line) for line in ("Альфред,", "чай", "в сад.")]
        (reply,) = await sink.wait_for(1)
        await registry.tell_text("u", "И печенье.")  # after the turn: a turn of its own
        await sink.wait_for(2)
    first, second = _replies(llm)
    assert _chat(first) == [("user", "Альфред,\nчай\nв сад.")]
    assert isinstance(tickets[-1], Accepted)
    assert reply.reply_to == tickets[-1].event_id
    assert _chat(second)[-1] == ("user", "И печенье.")
    assert _chat(second)[:-1] == [("user", "Альфред,\nчай\nв сад."), ("assistant", reply.text)]
    assert await store.unanswered("u") == []
    assert len(sink.replies) == 2
    assert [o for o in seen.seen if isinstance(o, MessagesJoined)] == [MessagesJoined(2, 0)]


async def test_messages_arriving_during_a_turn_are_not_coalesced():
    store, sink, gate = MemoryStore(), CollectingSink(), asyncio.Event()
    llm = ScriptedLLM(gate=gate)
    async with _registry(store, llm, sink, coalesce_s=0.2) as registry:
        await registry.tell_text("u", "первое")
        await _until(lambda: len(llm.calls) == 1)  # the window closed, the turn runs
        await registry.tell_text("u", "второе")
        await registry.tell_text("u", "третье")
        gate.set()
        await sink.wait_for(3)
    assert [_chat(c)[-1][1] for c in _replies(llm)] == ["первое", "второе", "третье"]


async def test_messages_over_the_rate_join_the_turn_ahead_and_are_answered():
    store, sink, gate, seen = MemoryStore(), CollectingSink(), asyncio.Event(), Recorder()
    llm = ScriptedLLM(gate=gate)
    async with _registry(store, llm, sink, seen) as registry:
        await registry.tell_text("u", "m0")
        await _until(lambda: len(llm.calls) == 1)
        await registry.tell_text("u", "m1")
        for n in (2, 3):
            await registry.tell_text("u", f"m{n}", joins=True)
        await registry.tell_text("u", "m4")
        gate.set()
        await sink.wait_for(3)
    assert [_chat(c)[-1][1] for c in _replies(llm)] == ["m0", "m1\nm2\nm3", "m4"]
    stored = sorted(e.content for e in store.events["u"].values() if e.role == "user")
    assert stored == ["m0", "m1", "m2", "m3", "m4"]
    assert await store.unanswered("u") == []
    assert len(sink.replies) == 3
    assert [o for o in seen.seen if isinstance(o, MessagesJoined)] == [MessagesJoined(0, 2)]
