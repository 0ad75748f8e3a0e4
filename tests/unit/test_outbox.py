"""The outbox and idempotent intake in the registry and actors, over the port fakes.

A reply is stored owed, sent, then marked delivered; a failed send leaves it owed and it is
sent again later, in order, without a new message; a message delivered twice (the same
origin) is stored and answered once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from actors.deps import ActorDeps, ActorSettings
from actors.registry import Accepted, Registry, Repeated
from adapters.bootstrap.clock import SystemClock
from engine.compression import CompressionPolicy
from engine.domain import EventIds, MemoryEvent
from engine.messages import CompressMemory
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM
from tests.helpers import make_deps

pytestmark = pytest.mark.anyio


def _deps(store: MemoryStore, sink: CollectingSink, **settings: Any) -> ActorDeps:
    return make_deps(
        store=store,
        llm=ScriptedLLM(),
        sink=sink,
        clock=SystemClock(),
        settings=ActorSettings(**settings),
    )


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


async def test_a_delivered_reply_is_marked_and_no_longer_owed():
    store, sink = MemoryStore(), CollectingSink()
    async with Registry(_deps(store, sink)) as registry:
        await registry.tell_text("u", "Добрый вечер")
        [reply] = await sink.wait_for(1)
        await _until(lambda: store.delivered)
    assert await store.owed_replies("u") == []
    [(key, receipt)] = store.delivered.items()
    assert key[0] == "u"
    assert receipt == "collected:1"
    assert store.events["u"][key[1]].reply_to == reply.reply_to


async def test_a_failed_send_stays_owed_and_goes_out_later_without_a_new_message():
    store, sink = MemoryStore(), CollectingSink()
    sink.failing = True
    async with Registry(_deps(store, sink, store_retry_s=0.01)) as registry:
        first = await registry.tell_text("u", "первое")
        await _until(lambda: sink.refused >= 1)
        assert len(await store.owed_replies("u")) == 1
        second = await registry.tell_text("u", "второе")  # answered while the first is owed
        await _until(lambda: len(store.events["u"]) == 4)  # both replies stored, both owed
        assert sink.replies == []
        sink.failing = False
        replies = await sink.wait_for(2)
        await _until(lambda: len(store.delivered) == 2)
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert [r.reply_to for r in replies] == [first.event_id, second.event_id]  # in order
    assert await store.owed_replies("u") == []
    assert len(sink.replies) == 2  # each once


async def test_owed_replies_found_at_activation_go_out_before_new_answers():
    store, sink = MemoryStore(), CollectingSink()
    ids = EventIds()
    asked_id, stamp = ids.next(SystemClock().now())
    asked = MemoryEvent(asked_id, "u", "user", "вопрос до сбоя", "text", stamp, 3)
    reply_id, stamp = ids.next(stamp)
    stored = MemoryEvent(reply_id, "u", "assistant", "ответ до сбоя", "text", stamp, 3, asked_id)
    await store.append([asked, stored])  # stored, never sent: a crash after the write
    async with Registry(_deps(store, sink)) as registry:
        ticket = await registry.tell_text("u", "новый вопрос")
        replies = await sink.wait_for(2)
    assert replies[0].text == "ответ до сбоя"
    assert isinstance(ticket, Accepted)
    assert replies[1].reply_to == ticket.event_id
    assert await store.owed_replies("u") == []


async def test_the_same_origin_is_stored_and_answered_once():
    store, sink = MemoryStore(), CollectingSink()
    async with Registry(_deps(store, sink)) as registry:
        first = await registry.tell_text("u", "один раз", origin="tg:msg:42")
        again = await registry.tell_text("u", "один раз", origin="tg:msg:42")
        other = await registry.tell_text("u", "другое", origin="tg:msg:43")
        await sink.wait_for(2)
        await _until(lambda: len(store.delivered) == 2)
    assert isinstance(first, Accepted)
    assert again == Repeated(first.event_id)
    assert isinstance(other, Accepted)
    users = [e for e in store.events["u"].values() if e.role == "user"]
    assert sorted(e.origin for e in users) == ["tg:msg:42", "tg:msg:43"]
    assert len(sink.replies) == 2


async def test_waking_a_user_sends_owed_replies_without_a_new_message():
    store, sink = MemoryStore(), CollectingSink()
    ids = EventIds()
    asked_id, stamp = ids.next(SystemClock().now())
    reply_id, later = ids.next(stamp)
    await store.append(
        [
            MemoryEvent(asked_id, "u", "user", "вопрос", "text", stamp, 3),
            MemoryEvent(reply_id, "u", "assistant", "ответ", "text", later, 3, asked_id),
        ]
    )
    async with Registry(_deps(store, sink)) as registry:
        assert await registry.wake("u")  # what the recovery sweep does at start
        [reply] = await sink.wait_for(1)
        await _until(lambda: store.delivered)
    assert (reply.text, reply.reply_to) == ("ответ", asked_id)
    assert await store.owed_replies("u") == []


async def test_compression_never_folds_a_reply_not_yet_delivered():
    store, sink = MemoryStore(), CollectingSink()
    sink.failing = True
    deps = _deps(store, sink, store_retry_s=0.01)
    async with Registry(deps) as registry:
        for i in range(3):
            await registry.tell_text("u", f"сообщение {i}")
        await _until(lambda: len(store.events["u"]) == 6)  # three answers, all owed
        object.__setattr__(deps, "policy", CompressionPolicy(threshold=4, keep_last=2))
        _, done = await registry.ask("u", CompressMemory())
        assert await done is None
        assert len(await store.owed_replies("u")) == 3  # none summarised away
        sink.failing = False
        await sink.wait_for(3)
    assert len(sink.replies) == 3
