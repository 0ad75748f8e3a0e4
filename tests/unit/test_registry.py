"""Registry and actor behaviour: durability, drain, passivation, crashes, outages, traces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.deps import ActorDeps, ActorSettings
from actors.observe import CompressionFinished
from actors.registry import Accepted, Registry, Rejected
from adapters.bootstrap.clock import SystemClock
from engine.compression import CompressionPolicy
from engine.domain import MemoryEvent
from engine.errors import ShuttingDown, StoreUnavailable
from engine.lifecycle import Phase
from engine.messages import CompressMemory, ResetActor
from engine.ports import Clock, CompletionRequest
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import Recorder, make_deps

pytestmark = pytest.mark.anyio


def _deps(
    store: MemoryStore | None = None,
    llm: ScriptedLLM | None = None,
    sink: CollectingSink | None = None,
    clock: Clock | None = None,
    **settings: Any,
) -> ActorDeps:
    return make_deps(
        store=store or MemoryStore(),
        llm=llm or ScriptedLLM(),
        sink=sink or CollectingSink(),
        clock=clock or ManualClock(),
        settings=ActorSettings(**settings),
    )


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


async def test_message_is_stored_before_tell_returns():
    store, sink, gate = MemoryStore(), CollectingSink(), asyncio.Event()
    async with Registry(_deps(store, ScriptedLLM(gate=gate), sink)) as registry:
        ticket = await registry.tell_text("u", "Добрый день")
        assert isinstance(ticket, Accepted)
        stored = store.events["u"][ticket.event_id]
        assert (stored.role, stored.content) == ("user", "Добрый день")
        assert store.profiles["u"].persona == "Alfred-style дворецкий"
        assert sink.replies == []  # stored although the turn has not finished
        gate.set()
        await sink.wait_for(1)


async def test_full_mailbox_answers_busy_and_stores_nothing():
    store, sink, gate = MemoryStore(), CollectingSink(), asyncio.Event()
    llm = ScriptedLLM(gate=gate)
    async with Registry(_deps(store, llm, sink, mailbox_capacity=2)) as registry:
        first = await registry.tell_text("u", "one")
        await _until(lambda: len(llm.calls) == 1)  # the first turn is in flight
        tickets = [await registry.tell_text("u", f"more {i}") for i in range(3)]
        assert isinstance(first, Accepted)
        assert [type(t) for t in tickets] == [Accepted, Accepted, Rejected]
        rejected = tickets[2]
        assert isinstance(rejected, Rejected)
        assert "Одну минуту" in rejected.reply
        assert len(store.events["u"]) == 3
        gate.set()
        replies = await sink.wait_for(3)
    accepted = [first.event_id, *(t.event_id for t in tickets[:2] if isinstance(t, Accepted))]
    assert [r.reply_to for r in replies] == accepted  # the refused one is never answered


async def test_drain_finishes_the_turn_in_flight_and_keeps_waiting_messages():
    store, sink, gate = MemoryStore(), CollectingSink(), asyncio.Event()
    llm = ScriptedLLM(gate=gate)
    async with Registry(_deps(store, llm, sink)) as registry:
        await registry.tell_text("u", "first")
        await registry.tell_text("u", "second")
        await _until(lambda: len(llm.calls) == 1)
        drain = asyncio.create_task(registry.drain())
        await _until(lambda: getattr(registry.get("u"), "stopping", False))
        assert sink.replies == []  # the drain waits for the turn in hand
        gate.set()
        await drain
        with pytest.raises(ShuttingDown):
            await registry.tell_text("u", "third")
    assert [r.kind for r in sink.replies] == ["reply"]
    owed = await store.unanswered("u")
    assert [e.content for e in owed] == ["second"]

    # The next process answers what the last one left, before anything new.
    sink2 = CollectingSink()
    async with Registry(_deps(store, ScriptedLLM(), sink2)) as registry:
        third = await registry.tell_text("u", "third")
        replies = await sink2.wait_for(2)
    assert isinstance(third, Accepted)
    assert [r.reply_to for r in replies] == [owed[0].id, third.event_id]
    assert await store.unanswered("u") == []


async def test_idle_actor_passivates_and_comes_back():
    sink = CollectingSink()
    async with Registry(_deps(sink=sink, clock=SystemClock(), idle_timeout_s=0.01)) as registry:
        await registry.tell_text("u", "hello")
        await sink.wait_for(1)
        await _until(lambda: len(registry) == 0)
        await registry.tell_text("u", "again")
        await sink.wait_for(2)
    assert [r.kind for r in sink.replies] == ["reply", "reply"]


async def test_a_crash_in_a_turn_answers_and_keeps_the_actor():
    sink = CollectingSink()

    def explode(request):
        raise RuntimeError("bug in the model adapter")

    llm = ScriptedLLM(script=explode)
    async with Registry(_deps(llm=llm, sink=sink)) as registry:
        await registry.tell_text("u", "hello")
        await sink.wait_for(1)
        actor = registry.get("u")
        assert actor is not None
        assert actor.state == "idle"
        llm.script = lambda request: "Indeed, sir."
        await registry.tell_text("u", "again")
        await sink.wait_for(2)
        assert registry.get("u") is actor
    assert sink.replies[0].kind == "error"
    assert "Прошу прощения" in sink.replies[0].text
    assert sink.replies[1].text == "Indeed, sir."


async def test_dead_store_at_tell_accepts_nothing():
    store = MemoryStore()
    async with Registry(_deps(store)) as registry:
        await registry.tell_text("u", "hello")
        store.down = True
        with pytest.raises(StoreUnavailable):
            await registry.tell_text("u", "lost?")
        store.down = False
    assert [e.content for e in store.events["u"].values() if e.role == "user"] == ["hello"]


async def test_store_outage_mid_turn_apologises_then_answers_when_back():
    store, sink = MemoryStore(), CollectingSink()

    async with Registry(
        _deps(store, sink=sink, clock=SystemClock(), store_retry_s=0.01)
    ) as registry:
        original = store.load_turn
        failures = {"left": 1}

        async def flaky_load(user_id, *, limit, before):
            if failures["left"]:
                failures["left"] -= 1
                raise StoreUnavailable("disk went away")
            return await original(user_id, limit=limit, before=before)

        store.load_turn = flaky_load  # type: ignore[method-assign]
        ticket = await registry.tell_text("u", "hello")
        replies = await sink.wait_for(2)
    assert replies[0].kind == "error"
    assert "архив" in replies[0].text
    assert replies[1].kind == "reply"
    assert isinstance(ticket, Accepted)
    assert replies[1].reply_to == ticket.event_id
    assert await store.unanswered("u") == []


async def test_activation_answers_stored_messages_without_a_reply():
    store, sink = MemoryStore(), CollectingSink()
    clock = ManualClock()
    left = MemoryEvent("0001", "u", "user", "from before the crash", "text", clock.now(), 5)
    await store.append([left])
    async with Registry(replace(_deps(store, sink=sink), clock=clock)) as registry:
        await registry.tell_text("u", "new")
        replies = await sink.wait_for(2)
    assert replies[0].reply_to == "0001"
    assert len(replies) == 2


async def test_one_trace_per_message_with_transitions_and_no_text():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    sink = CollectingSink()
    deps = replace(_deps(sink=sink), tracer=tracer)
    secret = "мой пароль от почты"
    async with Registry(deps) as registry:
        with tracer.start_as_current_span("telegram.update") as root:
            await registry.tell_text("u", secret)
        await sink.wait_for(1)
    spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    names = {s.name for s in spans}
    assert {"butler.turn", "store.load_turn", "prompt.build", "llm.chat", "store.append"} <= names
    turn = next(s for s in spans if s.name == "butler.turn")
    events = [(e.attributes or {}).get("trigger") for e in turn.events]
    assert events == ["hear_text", "replied"]
    llm = next(s for s in spans if s.name == "llm.chat")
    assert str((llm.attributes or {})["butler.prompt.template_version"]).startswith("persona-")
    for span in spans:
        for value in (span.attributes or {}).values():
            assert secret not in str(value)


async def test_a_model_that_never_answers_degrades_at_the_deadline():
    sink = CollectingSink()
    llm = ScriptedLLM(gate=asyncio.Event())  # never opened: the call hangs
    deps = _deps(llm=llm, sink=sink, clock=SystemClock(), llm_deadline_s=0.05)
    async with Registry(deps) as registry:
        await registry.tell_text("u", "hello")
        await sink.wait_for(1)
        actor = registry.get("u")
        assert actor is not None
        assert actor.state == "degraded"
    assert sink.replies[0].kind == "degraded"


async def test_a_message_too_long_for_the_prompt_is_declined_with_the_numbers():
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    async with Registry(_deps(store, llm, sink)) as registry:
        ticket = await registry.tell_text("u", "очень длинное послание " * 400)
        await sink.wait_for(1)
        actor = registry.get("u")
        assert actor is not None
        assert actor.state == "idle"
    assert llm.calls == []
    reply = sink.replies[0]
    assert reply.kind == "declined"
    assert "токенов" in reply.text
    assert isinstance(ticket, Accepted)
    assert ticket.event_id in store.events["u"]  # kept, not cut, and answered once
    assert await store.unanswered("u") == []


async def test_a_bad_summary_keeps_raw_events_and_is_retried_after_backoff():
    store, sink, clock = MemoryStore(), CollectingSink(), ManualClock()
    summaries = iter(["", "Summary in English for a Russian profile.", "Сводка: всё в порядке."])

    def script(request: CompletionRequest) -> str:
        return next(summaries) if request.purpose == "summary" else "Конечно, сэр."

    recorder = Recorder()
    deps = make_deps(
        store=store,
        llm=ScriptedLLM(script=script),
        sink=sink,
        clock=clock,
        policy=CompressionPolicy(threshold=6, keep_last=2, retry_base_s=60),
        observer=recorder,
    )

    def outcomes() -> list[str]:
        return [o.reason or o.status for o in recorder.seen if isinstance(o, CompressionFinished)]

    async with Registry(deps) as registry:
        for i in range(4):  # 8 events: over the threshold of 6 after the 4th reply
            await registry.tell_text("u", f"сообщение {i}")
            await sink.wait_for(i + 1)
        assert outcomes() == ["empty"]
        assert len(store.events["u"]) == 8  # nothing deleted
        await registry.tell_text("u", "ещё")  # within the backoff: no new attempt
        await sink.wait_for(5)
        assert outcomes() == ["empty"]
        clock.advance(61)
        await registry.tell_text("u", "и ещё")
        await sink.wait_for(6)
        assert outcomes() == ["empty", "wrong_language"]
        assert len(store.events["u"]) == 12
        clock.advance(121)  # the second failure doubled the delay
        await registry.tell_text("u", "последнее")
        await sink.wait_for(7)
    assert outcomes() == ["empty", "wrong_language", "ok"]
    assert store.profiles["u"].memory_summary == "Сводка: всё в порядке."
    assert len(store.events["u"]) == 2


async def test_views_show_live_state_and_reset_leaves_degraded():
    llm, sink = ScriptedLLM(down=True), CollectingSink()
    async with Registry(_deps(llm=llm, sink=sink)) as registry:
        await registry.tell_text("u", "hello")
        await sink.wait_for(1)
        (view,) = registry.views()
        assert (view.user_id, view.state, view.mailbox_depth) == ("u", "degraded", 0)
        assert view.turn_age_s is None
        assert view.last_transition is not None
        assert view.last_transition[1:] == ("generating", "degraded", "llm_unavailable")
        assert registry.count_by_phase()[Phase.DEGRADED] == 1

        llm.down = False
        assert isinstance(await registry.tell("u", ResetActor()), Accepted)
        await _until(lambda: registry.views()[0].state == "idle")
        await registry.tell_text("u", "again")  # breaker closed: asks the model at once
        await sink.wait_for(2)
    assert sink.replies[1].kind == "reply"


async def test_compress_command_runs_through_the_mailbox():
    store, sink, clock = MemoryStore(), CollectingSink(), ManualClock()
    recorder = Recorder()
    deps = make_deps(
        store=store,
        llm=ScriptedLLM(),
        sink=sink,
        clock=clock,
        policy=CompressionPolicy(threshold=100, keep_last=2),
        observer=recorder,
    )
    async with Registry(deps) as registry:
        for i in range(3):
            await registry.tell_text("u", f"сообщение {i}")
            await sink.wait_for(i + 1)
        assert len(store.events["u"]) == 6  # below the threshold: nothing compressed
        object.__setattr__(deps, "policy", CompressionPolicy(threshold=4, keep_last=2))
        await registry.tell("u", CompressMemory())
        await _until(lambda: len(store.events["u"]) == 2)
    assert store.profiles["u"].memory_summary.startswith("Сводка")
    assert [o.status for o in recorder.seen if isinstance(o, CompressionFinished)] == ["ok"]


@pytest.mark.parametrize("redact", [True, False])
async def test_redact_memory_keeps_pii_out_of_store_and_prompt(redact: bool):
    pii = "мой email ivan@example.ru, телефон +7 916 123-45-67"
    store, sink = MemoryStore(), CollectingSink()
    llm = ScriptedLLM(script=lambda r: f"Записал: {r.messages[-1].content}")
    async with Registry(_deps(store, llm, sink, redact_memory=redact)) as registry:
        ticket = await registry.tell_text("u", pii)
        assert isinstance(ticket, Accepted)
        (reply,) = await sink.wait_for(1)
    stored = [e.content for e in store.events["u"].values()]
    prompt = llm.calls[0].messages[-1].content
    if redact:
        assert stored == ["мой email [email], телефон [phone]", reply.text]
        assert "[email]" in reply.text
        assert prompt == "мой email [email], телефон [phone]"
        assert all("ivan@" not in text and "916" not in text for text in stored)
    else:
        assert stored == [pii, f"Записал: {pii}"]
        assert prompt == pii


async def test_redact_memory_stores_the_redacted_reply_but_delivers_it_whole():
    store, sink = MemoryStore(), CollectingSink()
    llm = ScriptedLLM(script=lambda _: "Ваша карта 4111 1111 1111 1111, сэр")
    async with Registry(_deps(store, llm, sink, redact_memory=True)) as registry:
        await registry.tell_text("u", "Какая у меня карта?")
        (reply,) = await sink.wait_for(1)
    assert reply.text == "Ваша карта 4111 1111 1111 1111, сэр"
    answer = next(e for e in store.events["u"].values() if e.role == "assistant")
    assert answer.content == "Ваша карта [card], сэр"


async def test_a_summary_that_loses_a_known_fact_keeps_the_raw_events():
    store, sink, clock = MemoryStore(), CollectingSink(), ManualClock()
    summaries = iter(["Сводка: хозяин пьёт чай.", "Сводка: хозяин пьёт чай с Анной."])

    def script(request: CompletionRequest) -> str:
        return next(summaries) if request.purpose == "summary" else "Конечно, сэр."

    recorder = Recorder()
    deps = make_deps(
        store=store,
        llm=ScriptedLLM(script=script),
        sink=sink,
        clock=clock,
        policy=CompressionPolicy(threshold=6, keep_last=2, retry_base_s=60),
        observer=recorder,
    )
    async with Registry(deps) as registry:
        await registry.tell_text("u", "привет")
        await sink.wait_for(1)
        known = store.profiles["u"]
        store.profiles["u"] = replace(known, memory_summary="Сводка: сестру хозяина зовут Анна.")
        for i in range(3):
            await registry.tell_text("u", f"сообщение {i}")
            await sink.wait_for(i + 2)
        assert len(store.events["u"]) == 8
        clock.advance(61)
        await registry.tell_text("u", "ещё")
        await sink.wait_for(5)
    reasons = [o.reason or o.status for o in recorder.seen if isinstance(o, CompressionFinished)]
    assert reasons == ["lost_facts", "ok"]
    assert store.profiles["u"].memory_summary == "Сводка: хозяин пьёт чай с Анной."
    assert len(store.events["u"]) == 2
