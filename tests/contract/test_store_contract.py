"""The `Store` contract: every backend in `conftest.BACKENDS` must pass all of it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest

from engine.domain import EventIds, MemoryEvent, Role, UserProfile
from engine.errors import StoreCorrupted, StoreUnavailable
from engine.ports import Store
from tests.contract.conftest import Backend

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


class Events:
    """Makes events the way the actors do: ids that sort in creation order."""

    def __init__(self, start: datetime = T0) -> None:
        self.ids = EventIds()
        self.now = start

    def next_id(self) -> str:
        return self.ids.next(self.now)[0]

    def make(
        self,
        user_id: str,
        content: str = "hello",
        *,
        role: Role = "user",
        reply_to: str = "",
        tokens: int = 2,
        step: timedelta = timedelta(seconds=1),
    ) -> MemoryEvent:
        self.now += step
        event_id, stamp = self.ids.next(self.now)
        return MemoryEvent(event_id, user_id, role, content, "text", stamp, tokens, reply_to)

    def many(self, user_id: str, count: int) -> list[MemoryEvent]:
        return [self.make(user_id, f"message {i}") for i in range(count)]


def profile(user_id: str, **changes: object) -> UserProfile:
    return replace(UserProfile.new(user_id, T0), **changes)  # type: ignore[arg-type]


@pytest.fixture
def events() -> Events:
    return Events()


# Profiles


async def test_profile_is_absent_until_saved(store: Store):
    assert await store.get_profile("u1") is None
    await store.save_profile(profile("u1"))
    assert await store.get_profile("u1") == profile("u1")


async def test_save_profile_replaces_by_user_id(store: Store):
    await store.save_profile(profile("u1"))
    changed = profile("u1", tone="formal", language="en", preferred_topics=("tea", "chess"))
    await store.save_profile(changed)
    assert await store.get_profile("u1") == changed
    assert await store.list_profiles(limit=10) == [changed]


async def test_first_contact_profile_comes_with_the_append(store: Store, events: Events):
    first = profile("u1")
    await store.append([events.make("u1")], profile=first)
    assert await store.get_profile("u1") == first


async def test_append_never_overwrites_an_existing_profile(store: Store, events: Events):
    kept = profile("u1", tone="formal", memory_summary="likes tea")
    await store.save_profile(kept)
    await store.append([events.make("u1")], profile=profile("u1"))
    assert await store.get_profile("u1") == kept


async def test_list_profiles_pages_in_user_id_order(store: Store):
    user_ids = [f"user-{i:02d}" for i in (5, 3, 9, 1, 7, 2, 8)]
    for user_id in user_ids:
        await store.save_profile(profile(user_id))
    pages: list[list[str]] = []
    after = ""
    for _ in range(4):  # bounded, so a store that repeats a page fails instead of hanging
        page = [p.user_id for p in await store.list_profiles(limit=3, after=after)]
        pages.append(page)
        after = page[-1] if page else after
    ordered = sorted(user_ids)
    assert pages == [ordered[:3], ordered[3:6], ordered[6:], []]
    assert await store.list_profiles(limit=0) == []


# Events of a turn


async def test_load_turn_gives_newest_events_oldest_first_and_the_count(
    store: Store, events: Events
):
    history = events.many("u1", 30)
    await store.append(history, profile=profile("u1", memory_summary="earlier"))
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert turn.memory.events == tuple(history[-20:])
    assert turn.memory.total_events == 30
    assert turn.memory.summary == "earlier"
    assert turn.profile == profile("u1", memory_summary="earlier")


async def test_load_turn_only_reads_events_below_before(store: Store, events: Events):
    history = events.many("u1", 12)
    await store.append(history)
    turn = await store.load_turn("u1", limit=5, before=history[10].id)
    assert turn.memory.events == tuple(history[5:10])
    assert turn.memory.total_events == 12
    assert (await store.load_turn("u1", limit=0, before=events.next_id())).memory.events == ()


async def test_load_turn_puts_each_reply_right_after_the_message_it_answers(
    store: Store, events: Events
):
    # A burst: three messages stored before the first reply; replies follow in turn.
    m1, m2, m3 = (events.make("u1", f"message {i}") for i in range(3))
    r1 = events.make("u1", "reply 1", role="assistant", reply_to=m1.id)
    r2 = events.make("u1", "reply 2", role="assistant", reply_to=m2.id)
    await store.append([m1, m2, m3, r1, r2])
    turn = await store.load_turn("u1", limit=20, before=m3.id)
    assert turn.memory.events == (m1, r1, m2, r2)
    assert (await store.load_turn("u1", limit=20, before=m2.id)).memory.events == (m1, r1)
    assert (await store.load_turn("u1", limit=3, before=m3.id)).memory.events == (r1, m2, r2)
    assert (await store.load_turn("u1", limit=20, before=m1.id)).memory.events == ()
    r3 = events.make("u1", "reply 3", role="assistant", reply_to=m3.id)
    await store.append([r3])
    everything = await store.load_turn("u1", limit=20, before=events.next_id())
    assert everything.memory.events == (m1, r1, m2, r2, m3, r3)


async def test_load_turn_of_a_stranger_is_empty(store: Store, events: Events):
    await store.append(events.many("u1", 3))
    turn = await store.load_turn("stranger", limit=20, before=events.next_id())
    assert turn.profile is None
    assert turn.memory.events == ()
    assert turn.memory.total_events == 0
    assert turn.memory.summary == ""


async def test_users_do_not_see_each_others_events(store: Store, events: Events):
    mine, theirs = events.many("u1", 4), events.many("u2", 6)
    await store.append(mine + theirs)
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert turn.memory.events == tuple(mine)
    assert turn.memory.total_events == 4


async def test_appending_an_existing_id_replaces_the_event(store: Store, events: Events):
    placeholder = replace(events.make("u1", ""), source="voice", tokens=0)
    await store.append([placeholder])
    transcript = replace(placeholder, content="Транскрипт голосового", tokens=7)
    await store.append([transcript])
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert turn.memory.events == (transcript,)
    assert turn.memory.total_events == 1


async def test_unanswered_lists_user_events_without_a_reply_oldest_first(
    store: Store, events: Events
):
    answered = events.make("u1", "first")
    reply = events.make("u1", "answer", role="assistant", reply_to=answered.id)
    pending_a = events.make("u1", "second")
    pending_b = events.make("u1", "third")
    foreign_reply = events.make("u2", "not for u1", role="assistant", reply_to=pending_b.id)
    await store.append([pending_b, reply, answered, pending_a, foreign_reply])
    assert await store.unanswered("u1") == [pending_a, pending_b]
    assert await store.unanswered("u2") == []
    assert await store.unanswered("nobody") == []


async def test_a_reply_answers_its_message_and_the_messages_folded_into_it(
    store: Store, events: Events
):
    # A folded burst: one reply, to the newest message of the batch; the earlier ones name it.
    m0, m1, m2, m3 = (events.make("u1", f"line {i}") for i in range(4))
    folded = replace(m1, reply_to=m2.id)
    batch_reply = events.make("u1", "one answer", role="assistant", reply_to=m2.id)
    await store.append([m0, m1, m2, m3])
    await store.append([folded, batch_reply])  # written again with the reply, in one write
    assert await store.unanswered("u1") == [m0, m3]  # m0 was not in the batch
    await store.append([events.make("u1", "and that", role="assistant", reply_to=m3.id)])
    assert await store.unanswered("u1") == [m0]
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert [e.content for e in turn.memory.events] == [
        "line 0",
        "line 1",
        "line 2",
        "one answer",
        "line 3",
        "and that",
    ]


# Compaction and retention


async def test_events_before_keeps_the_newest_out(store: Store, events: Events):
    history = events.many("u1", 25)
    await store.append(history + events.many("u2", 3))
    assert await store.events_before("u1", keep_last=20) == history[:5]
    assert await store.events_before("u1", keep_last=0) == history
    assert await store.events_before("u1", keep_last=25) == []
    assert await store.events_before("u1", keep_last=100) == []


async def test_apply_summary_saves_the_profile_and_deletes_exactly_the_ids(
    store: Store, events: Events
):
    history = events.many("u1", 10)
    other = events.make("u2")
    await store.append([*history, other], profile=profile("u1"))
    summarised = profile("u1").with_summary("кратко", history[5].id, T0 + timedelta(hours=1))
    doomed = [e.id for e in history[:6]] + ["no-such-id", other.id]
    assert await store.apply_summary(summarised, doomed) == 6
    assert await store.get_profile("u1") == summarised
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert turn.memory.events == tuple(history[6:])
    assert turn.memory.summary == "кратко"
    assert (await store.load_turn("u2", limit=5, before=events.next_id())).memory.events == (other,)
    assert await store.apply_summary(summarised, [e.id for e in history[:6]]) == 0


async def test_purge_older_than_deletes_by_creation_time(store: Store, events: Events):
    old = [events.make("u1", step=timedelta(days=1)) for _ in range(3)]
    cutoff = events.now + timedelta(days=1)
    boundary = replace(events.make("u2", step=timedelta(days=1)), created_at=cutoff)
    new = [events.make(user, step=timedelta(days=1)) for user in ("u1", "u2")]
    await store.append([*old, boundary, *new])
    assert await store.purge_older_than(cutoff) == 3
    assert await store.events_before("u1", keep_last=0) == [new[0]]
    assert await store.events_before("u2", keep_last=0) == [boundary, new[1]]
    assert await store.purge_older_than(cutoff) == 0


async def test_users_over_counts_only_users_past_the_threshold(store: Store, events: Events):
    for user_id, count in (("a", 3), ("b", 6), ("c", 5), ("d", 7)):
        await store.append(events.many(user_id, count))
    assert sorted(await store.users_over(5, limit=10)) == [("b", 6), ("d", 7)]
    assert await store.users_over(7, limit=10) == []
    (one,) = await store.users_over(4, limit=1)
    assert one in {("b", 6), ("c", 5), ("d", 7)}


async def test_erase_user_forgets_profile_and_events(store: Store, events: Events):
    await store.append(events.many("u1", 4), profile=profile("u1"))
    kept = events.many("u2", 2)
    await store.append(kept, profile=profile("u2"))
    await store.erase_user("u1")
    assert await store.get_profile("u1") is None
    assert await store.events_before("u1", keep_last=0) == []
    assert await store.get_profile("u2") == profile("u2")
    assert await store.events_before("u2", keep_last=0) == kept


# Values survive exactly


async def test_datetimes_round_trip_exactly_as_aware_utc(store: Store, events: Events):
    moscow = timezone(timedelta(hours=3))
    created = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=moscow)
    summarised = datetime(2031, 1, 2, 3, 4, 5, 1, tzinfo=UTC)
    saved = profile("u1", created_at=created, updated_at=created, summary_updated_at=summarised)
    event = replace(events.make("u1"), created_at=datetime(2024, 2, 29, 0, 0, 0, 7, tzinfo=moscow))
    await store.append([event], profile=saved)
    loaded = await store.get_profile("u1")
    assert loaded == saved
    assert loaded is not None
    for moment in (loaded.created_at, loaded.updated_at, loaded.summary_updated_at):
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)
    (back,) = (await store.load_turn("u1", limit=1, before=events.next_id())).memory.events
    assert back == event
    assert back.created_at.utcoffset() == timedelta(0)
    assert back.created_at.microsecond == 7


async def test_unicode_round_trips(store: Store, events: Events):
    text = "Добрый вечер, сэр 🎩🫖 — «чай?» 中文 \u0000 конец"
    saved = profile(
        "пользователь-1",
        persona="Дворецкий 🤵 с манерами",
        preferred_topics=("шахматы ♟️", "чай 🍵"),
        memory_summary="Любит 🐈‍⬛",
    )
    event = events.make("пользователь-1", text)
    await store.append([event], profile=saved)
    turn = await store.load_turn("пользователь-1", limit=5, before=events.next_id())
    assert turn.profile == saved
    assert turn.memory.events == (event,)


# Concurrency, failure and lifecycle


async def test_concurrent_appends_are_all_durable(backend: Backend, events: Events):
    store = await backend.open()
    batch = [events.make(f"user-{i % 17}", f"сообщение {i} 🙂") for i in range(200)]
    await asyncio.gather(*(store.append([event]) for event in batch))
    await store.close()
    reopened = await backend.open()
    try:
        for user in {e.user_id for e in batch}:
            stored = await reopened.events_before(user, keep_last=0)
            assert stored == [e for e in batch if e.user_id == user]
    finally:
        await reopened.close()


async def test_a_refused_write_does_not_lose_concurrent_writes(store: Store, events: Events):
    good = [events.make(f"user-{i}") for i in range(20)]
    bad = replace(events.make("user-bad"), tokens=-1)
    writes = [store.append([event]) for event in good[:10]]
    writes += [store.append([bad]), *(store.append([event]) for event in good[10:])]
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(outcomes[10], StoreCorrupted)
    assert [o for i, o in enumerate(outcomes) if i != 10] == [None] * 20
    for event in good:
        assert await store.events_before(event.user_id, keep_last=0) == [event]
    assert await store.events_before("user-bad", keep_last=0) == []


async def test_a_refused_append_stores_none_of_its_events(store: Store, events: Events):
    fine, refused = events.make("u1"), replace(events.make("u1"), tokens=-1)
    with pytest.raises(StoreCorrupted):
        await store.append([fine, refused], profile=profile("u1"))
    assert await store.events_before("u1", keep_last=0) == []
    assert await store.get_profile("u1") is None


async def test_close_finishes_queued_writes_first(backend: Backend, events: Events):
    store = await backend.open()
    batch = [events.make("u1", f"m{i}") for i in range(50)]
    with anyio.fail_after(10):
        *appended, _ = await asyncio.gather(*(store.append([e]) for e in batch), store.close())
    assert appended == [None] * 50
    reopened = await backend.open()
    try:
        assert await reopened.events_before("u1", keep_last=0) == batch
    finally:
        await reopened.close()


async def test_every_operation_after_close_is_unavailable(backend: Backend, events: Events):
    store = await backend.open()
    await store.close()
    await store.close()  # a second close is harmless
    calls = [
        store.get_profile("u1"),
        store.save_profile(profile("u1")),
        store.list_profiles(limit=1),
        store.erase_user("u1"),
        store.append([events.make("u1")]),
        store.load_turn("u1", limit=1, before="z"),
        store.unanswered("u1"),
        store.events_before("u1", keep_last=1),
        store.apply_summary(profile("u1"), ["x"]),
        store.purge_older_than(T0),
        store.users_over(1, limit=1),
    ]
    for call in calls:
        with anyio.fail_after(5), pytest.raises(StoreUnavailable):
            await call


async def test_an_unreachable_store_is_unavailable(remote_backend: Backend):
    with pytest.raises(StoreUnavailable):
        await remote_backend.open_unreachable()


# The response cache


async def test_cached_answers_round_trip_until_they_expire(store: Store):
    until = T0 + timedelta(hours=24)
    assert await store.cached_answer("k1", now=T0) is None
    await store.cache_answer("k1", "u1", "Будет исполнено, сэр.", expires_at=until)
    assert await store.cached_answer("k1", now=T0) == "Будет исполнено, сэр."
    assert await store.cached_answer("k1", now=until) is None  # expired at its deadline
    await store.cache_answer("k1", "u1", "Иначе.", expires_at=until + timedelta(hours=1))
    assert await store.cached_answer("k1", now=until) == "Иначе."


async def test_erasing_a_user_erases_their_cached_answers(store: Store, events: Events):
    until = T0 + timedelta(hours=24)
    await store.append([events.make("u1")], profile=profile("u1"))
    await store.cache_answer("k1", "u1", "one", expires_at=until)
    await store.cache_answer("k2", "u2", "two", expires_at=until)
    await store.erase_user("u1")
    assert await store.cached_answer("k1", now=T0) is None
    assert await store.cached_answer("k2", now=T0) == "two"


async def test_purging_the_cache_deletes_only_expired_answers(store: Store):
    await store.cache_answer("old", "u1", "old", expires_at=T0)
    await store.cache_answer("new", "u1", "new", expires_at=T0 + timedelta(hours=1))
    assert await store.purge_cache(T0) == 1
    assert await store.cached_answer("new", now=T0) == "new"
