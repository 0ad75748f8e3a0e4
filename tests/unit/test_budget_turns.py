"""Turns under the kill switch and the token budget: what the model is asked, what is stored,
what the user hears (fakes behind the ports; the e2e runs the same through Telegram)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.deps import ActorSettings
from actors.observe import BudgetApplied
from actors.registry import Accepted, Registry
from adapters.observability.metrics import ActorCollector
from engine.budget import Usage
from engine.compression import CompressionPolicy
from engine.persona import variants
from engine.ports import Completion, CompletionRequest
from engine.prompt import PLAIN_SYSTEM
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import Recorder, make_deps

pytestmark = pytest.mark.anyio

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PER_CALL = 15  # ScriptedLLM reports 10 prompt + 5 completion tokens


def _registry(
    store: MemoryStore,
    llm: ScriptedLLM,
    sink: CollectingSink,
    clock: ManualClock,
    *,
    observer: Recorder | None = None,
    policy: CompressionPolicy | None = None,
    **settings: Any,
) -> Registry:
    settings.setdefault("cache_ttl_s", 0.0)
    deps = make_deps(
        store=store,
        llm=llm,
        sink=sink,
        clock=clock,
        settings=ActorSettings(**settings),
        observer=observer,
        policy=policy,
    )
    return Registry(deps)


async def _say(registry: Registry, sink: CollectingSink, text: str) -> str:
    count = len(sink.replies)
    ticket = await registry.tell_text("u", text, language="en")
    assert isinstance(ticket, Accepted)
    replies = await sink.wait_for(count + 1)
    return replies[-1].text


async def test_personalization_off_asks_the_plain_model_and_reads_no_memory():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    policy = CompressionPolicy(threshold=3, keep_last=1)
    async with _registry(store, llm, sink, clock, personalization=False, policy=policy) as reg:
        for i in range(4):
            await _say(reg, sink, f"question {i}")
    assert [r.kind for r in sink.replies] == ["reply"] * 4
    assert [c.purpose for c in llm.calls] == ["reply"] * 4  # never a summary
    for i, request in enumerate(llm.calls):
        assert [(m.role, m.content) for m in request.messages] == [
            ("system", PLAIN_SYSTEM),
            ("user", f"question {i}"),
        ]
    # The ledger still holds every message and reply (delivery and recovery need them).
    roles = [e.role for e in sorted(store.events["u"].values(), key=lambda e: e.id)]
    assert roles == ["user", "assistant"] * 4
    assert await store.unanswered("u") == []
    assert store.profiles["u"].memory_summary == ""


async def test_personalization_off_ignores_a_stored_summary():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    async with _registry(store, llm, sink, clock) as reg:
        await _say(reg, sink, "hello")
    profile = store.profiles["u"]
    store.profiles["u"] = profile.with_summary("The master adores Earl Grey.", "", NOON)
    async with _registry(store, llm, sink, clock, personalization=False) as reg:
        await _say(reg, sink, "what do I drink?")
    system = llm.calls[-1].messages[0].content
    assert system == PLAIN_SYSTEM
    assert "Earl Grey" not in " ".join(m.content for m in llm.calls[-1].messages)


async def test_usage_is_counted_from_the_models_report():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    async with _registry(store, llm, sink, clock) as reg:
        await _say(reg, sink, "one")
        await _say(reg, sink, "two")
    assert await store.usage("u", now=NOON) == Usage(2 * PER_CALL, 2 * PER_CALL)


async def test_usage_is_counted_by_our_counter_when_the_model_reports_none():
    class Silent(ScriptedLLM):
        async def complete(self, request: CompletionRequest) -> Completion:
            done = await super().complete(request)
            return replace(done, prompt_tokens=0, completion_tokens=0)

    store, sink, clock = MemoryStore(), CollectingSink(), ManualClock(NOON)
    async with _registry(store, Silent(), sink, clock) as reg:
        await _say(reg, sink, "a question of some length, sir")
    spent = (await store.usage("u", now=NOON)).day
    assert spent > 20  # the persona alone is more than that


async def test_an_answer_from_the_cache_costs_nothing():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    async with _registry(store, llm, sink, clock, personalization=False, cache_ttl_s=60) as reg:
        await _say(reg, sink, "same")
        await _say(reg, sink, "same")
    assert len(llm.calls) == 1
    assert await store.usage("u", now=NOON) == Usage(PER_CALL, PER_CALL)


async def test_near_the_budget_the_prompt_is_brief_then_the_budget_line_until_midnight():
    store, llm, sink = MemoryStore(), ScriptedLLM(), CollectingSink()
    clock, recorder = ManualClock(NOON), Recorder()
    limit = 100  # 6 calls: 90 tokens (>= 80 %), 7 calls: 105 (spent)
    async with _registry(store, llm, sink, clock, observer=recorder, token_budget_daily=limit) as r:
        for i in range(6):
            await _say(r, sink, f"message {i}")
        assert len(llm.calls[5].messages) == 1 + 11  # persona, 10 earlier events, the message
        await _say(r, sink, "message 6")  # at 90 tokens: brief
        brief = llm.calls[6]
        assert [m.content for m in brief.messages[1:]] == [
            "message 4",
            "Certainly, sir (9).",
            "message 5",
            "Certainly, sir (9).",
            "message 6",
        ]  # the persona, then the last 5 events: the message and the 4 events before it
        spent = await _say(r, sink, "message 7")  # at 105 tokens: no model call
        assert len(llm.calls) == 7
        actor = r.get("u")
        assert actor is not None
        assert actor.state == "idle"
    assert sink.replies[-1].kind == "budget"
    assert "on 4 December at 00:00 UTC" in spent
    assert any(spent.startswith(v.split("{")[0]) for v in variants("budget_spent", "en"))
    assert await store.unanswered("u") == []  # the budget line answers it, and is stored
    levels = [o.level for o in recorder.seen if isinstance(o, BudgetApplied)]
    assert levels == ["reduced", "exhausted"]

    clock.current = datetime(2026, 12, 4, 0, 0, 1, tzinfo=UTC)  # the day renews
    async with _registry(store, llm, sink, clock, token_budget_daily=limit) as r:
        await _say(r, sink, "good morning")
    assert [r.kind for r in sink.replies[-2:]] == ["budget", "reply"]
    assert len(llm.calls) == 8


async def test_a_spent_month_says_when_the_month_renews_and_reset_restores_answers():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    await store.add_usage("u", 1000, now=NOON - timedelta(days=2))
    async with _registry(store, llm, sink, clock, token_budget_monthly=1000) as reg:
        text = await _say(reg, sink, "anything")
        assert llm.calls == []
        assert "on 1 January at 00:00 UTC" in text
        await store.reset_usage("u")
        await _say(reg, sink, "and now?")
    assert [r.kind for r in sink.replies] == ["budget", "reply"]


async def test_the_budget_line_speaks_russian_to_a_russian_user():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    await store.add_usage("u", 50, now=NOON)
    async with _registry(store, llm, sink, clock, token_budget_daily=50) as reg:
        await reg.tell_text("u", "Добрый вечер", language="ru")
        replies = await sink.wait_for(1)
    assert replies[0].kind == "budget"
    assert "4 декабря в 00:00 UTC" in replies[0].text


async def test_without_a_limit_usage_is_still_counted_and_never_read():
    class CountingStore(MemoryStore):
        reads = 0

        async def usage(self, user_id: str, *, now: datetime) -> Usage:
            CountingStore.reads += 1
            return await super().usage(user_id, now=now)

    store, llm, sink, clock = CountingStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    async with _registry(store, llm, sink, clock) as reg:
        await _say(reg, sink, "hello")
    assert CountingStore.reads == 0
    assert await store.usage("u", now=NOON) == Usage(PER_CALL, PER_CALL)


def _gauges(registry: Registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    metrics = CollectorRegistry()
    metrics.register(ActorCollector(registry))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.collect()
        for s in family.samples
    }


async def test_the_gauges_show_users_over_a_budget_and_the_kill_switch():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock(NOON)
    await store.add_usage("u", 85, now=NOON)
    async with _registry(store, llm, sink, clock, token_budget_monthly=100) as reg:
        gauges = _gauges(reg)
        assert gauges["butler_personalization_enabled", ()] == 1
        assert gauges["butler_budget_users", (("level", "reduced"), ("period", "month"))] == 0
        await _say(reg, sink, "one")  # starts at 85 %: reduced; ends at 100 %
        await _say(reg, sink, "two")  # spent
        gauges = _gauges(reg)
        assert gauges["butler_budget_users", (("level", "exhausted"), ("period", "month"))] == 1
        assert gauges["butler_budget_users", (("level", "reduced"), ("period", "month"))] == 0
        assert gauges["butler_budget_users", (("level", "exhausted"), ("period", "day"))] == 0
    async with _registry(store, llm, sink, clock, personalization=False) as reg:
        assert _gauges(reg)["butler_personalization_enabled", ()] == 0
