"""The LLM response cache: keys, hits across identical prompts, expiry, metrics, erasure."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.deps import ActorSettings
from actors.registry import Registry
from adapters.observability.metrics import ButlerMetrics
from engine.cache import cache_key
from engine.domain import UserProfile
from engine.ports import ChatMessage, CompletionRequest
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import make_deps

pytestmark = pytest.mark.anyio


def request(text: str) -> CompletionRequest:
    return CompletionRequest((ChatMessage("user", text),), max_tokens=64)


def test_the_key_changes_with_template_model_profile_and_prompt():
    clock = ManualClock()
    profile = UserProfile.new("u1", clock.now())
    base: dict[str, Any] = {
        "template_version": "1",
        "model": "m",
        "profile": profile,
        "request": request("a"),
    }
    key = cache_key(**base)
    assert key == cache_key(**base)
    assert len(key) == 64
    changes: list[dict[str, Any]] = [
        {"template_version": "2"},
        {"model": "other"},
        {"profile": replace(profile, tone="formal")},
        {"profile": replace(profile, memory_summary="Любит чай.")},
        {"request": request("b")},
        {"request": replace(request("a"), max_tokens=65)},
    ]
    for change in changes:
        assert cache_key(**(base | change)) != key, change


async def test_an_identical_prompt_is_answered_from_the_cache():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock()
    metrics = CollectorRegistry()
    deps = make_deps(store=store, llm=llm, sink=sink, clock=clock)
    deps = replace(deps, observer=ButlerMetrics(metrics))
    async with Registry(deps) as registry:
        await registry.tell_text("alice", "Добрый вечер")
        await sink.wait_for(1)
        await registry.tell_text("bob", "Добрый вечер")  # same persona, no history: same prompt
        await sink.wait_for(2)
        clock.advance(25 * 3600)  # past the 24 h TTL
        await registry.tell_text("carol", "Добрый вечер")
        await sink.wait_for(3)
    assert len([c for c in llm.calls if c.purpose == "reply"]) == 2
    assert sink.replies[0].text == sink.replies[1].text
    assert metrics.get_sample_value("butler_llm_cache_hits_total", {"purpose": "reply"}) == 1
    assert metrics.get_sample_value("butler_llm_cache_misses_total", {"purpose": "reply"}) == 2
    await store.erase_user("alice")
    assert all(owner != "alice" for owner, _, _ in store.cache.values())


async def test_the_cache_can_be_turned_off():
    store, llm, sink, clock = MemoryStore(), ScriptedLLM(), CollectingSink(), ManualClock()
    deps = make_deps(
        store=store, llm=llm, sink=sink, clock=clock, settings=ActorSettings(cache_ttl_s=0)
    )
    async with Registry(deps) as registry:
        for user in ("a", "b"):
            await registry.tell_text(user, "Привет")
        await sink.wait_for(2)
    assert len(llm.calls) == 2
    assert store.cache == {}
