"""The `Store` contract, continued: idempotent intake (`origin`) and the outbox (owed replies).

Every backend of `conftest` runs it, like `test_store_contract.py`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.errors import DuplicateMessage
from engine.ports import Store
from tests.contract.conftest import Backend
from tests.contract.test_store_contract import Events, profile

pytestmark = pytest.mark.anyio


@pytest.fixture
def events() -> Events:
    return Events()


async def test_a_repeated_origin_is_refused_and_nothing_is_written(store: Store, events: Events):
    first = replace(events.make("u1", "Добрый вечер"), origin="tg:msg:7")
    await store.append([first], profile=profile("u1"))
    again = replace(events.make("u1", "Добрый вечер"), origin="tg:msg:7")
    with pytest.raises(DuplicateMessage) as caught:
        await store.append([again])
    assert caught.value.event_id == first.id
    context = await store.load_turn("u1", limit=10, before="\uffff")
    assert [e.id for e in context.memory.events] == [first.id]
    assert context.memory.events[0].origin == "tg:msg:7"


async def test_an_origin_is_unique_per_user_only(store: Store, events: Events):
    await store.append([replace(events.make("u1"), origin="tg:msg:1")])
    await store.append([replace(events.make("u2"), origin="tg:msg:1")])  # another chat
    assert len(await store.unanswered("u1")) == len(await store.unanswered("u2")) == 1


async def test_rewriting_the_same_event_keeps_its_origin(store: Store, events: Events):
    first = replace(events.make("u1", "draft"), origin="tg:msg:3")
    await store.append([first])
    await store.append([replace(first, content="edited")])  # an edit: same id, same origin
    [stored] = await store.unanswered("u1")
    assert (stored.content, stored.origin) == ("edited", "tg:msg:3")


async def test_events_without_an_origin_never_collide(store: Store, events: Events):
    await store.append(events.many("u1", 3))
    assert len(await store.unanswered("u1")) == 3


async def test_a_reply_is_owed_until_marked_delivered(store: Store, events: Events):
    asked = events.make("u1", "question")
    first = events.make("u1", "answer one", role="assistant", reply_to=asked.id)
    second = events.make("u1", "answer two", role="assistant", reply_to=asked.id)
    await store.append([asked, first, second])
    assert [e.id for e in await store.owed_replies("u1")] == [first.id, second.id]
    await store.mark_delivered("u1", first.id, "tg:101")
    assert [e.id for e in await store.owed_replies("u1")] == [second.id]
    await store.mark_delivered("u1", second.id, "refused:forbidden")
    assert await store.owed_replies("u1") == []
    assert await store.owed_replies("nobody") == []


async def test_marking_twice_or_marking_a_user_message_changes_nothing(
    store: Store, events: Events
):
    asked = events.make("u1", "question")
    reply = events.make("u1", "answer", role="assistant", reply_to=asked.id)
    await store.append([asked, reply])
    await store.mark_delivered("u1", asked.id, "tg:1")  # not a reply: nothing to mark
    await store.mark_delivered("u1", reply.id, "tg:2")
    await store.mark_delivered("u1", reply.id, "tg:3")
    assert await store.owed_replies("u1") == []
    assert [e.id for e in await store.unanswered("u1")] == []


async def test_owed_replies_survive_a_reopen_and_go_with_erase(backend: Backend, events: Events):
    store = await backend.open()
    asked = events.make("u1", "question")
    reply = events.make("u1", "answer", role="assistant", reply_to=asked.id)
    try:
        await store.append([asked, reply], profile=profile("u1"))
    finally:
        await store.close()
    store = await backend.open()
    try:
        assert [e.id for e in await store.owed_replies("u1")] == [reply.id]
        await store.erase_user("u1")
        assert await store.owed_replies("u1") == []
    finally:
        await store.close()
