"""The lease half of the `Store` contract (`LeaseStore` and `Store.fenced`), on every backend
of `conftest.BACKENDS`: exclusive acquisition under a race, expiry and takeover with a greater
token, renewal and fenced writes refused after a takeover (writing nothing), release, nudges.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import LeaseLost, OwnedElsewhere
from engine.ports import Lease, Store
from tests.contract.conftest import Backend
from tests.contract.test_store_contract import Events, profile

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
TTL = 15.0


@pytest.fixture
def events() -> Events:
    return Events()


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_a_free_key_is_taken_with_a_first_token(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    assert (lease.key, lease.owner, lease.token, lease.taken_from) == ("user:u1", "proc-a", 1, "")
    assert lease.expires_at == later(TTL)
    assert await store.leases("user:", now=T0) == [lease]


async def test_a_held_key_refuses_another_owner_and_names_the_holder(store: Store):
    held = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    with pytest.raises(OwnedElsewhere) as refused:
        await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL - 1))
    assert refused.value.key == "user:u1"
    assert refused.value.owner == "proc-a"
    assert refused.value.expires_at == held.expires_at
    assert refused.value.token == held.token
    assert await store.leases("user:", now=later(1)) == [held]


async def test_the_holder_acquiring_again_renews_with_the_same_token(store: Store):
    first = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    again = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=later(5))
    assert again.token == first.token
    assert again.expires_at == later(5 + TTL)


async def test_an_expired_key_is_taken_over_with_a_greater_token(store: Store):
    first = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    assert await store.leases("user:", now=later(TTL)) == []  # expiry is exclusive
    taken = await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL))
    assert taken.owner == "proc-b"
    assert taken.token > first.token
    assert taken.taken_from == "proc-a"  # a takeover: proc-a never released it
    back = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=later(3 * TTL))
    assert back.token > taken.token  # every new holder, the old one included


async def test_renewal_extends_and_keeps_the_token(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    renewed = await store.renew_lease(lease, ttl_s=TTL, now=later(10))
    assert renewed.token == lease.token
    assert renewed.expires_at == later(10 + TTL)
    with pytest.raises(OwnedElsewhere):  # the renewal counted: still held at the old expiry
        await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL + 1))


async def test_renewal_after_expiry_without_a_taker_still_holds(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    renewed = await store.renew_lease(lease, ttl_s=TTL, now=later(TTL + 5))
    assert renewed.token == lease.token
    assert await store.leases("user:", now=later(TTL + 6)) == [renewed]


async def test_renewal_after_a_takeover_is_lost(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    taken = await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL + 1))
    with pytest.raises(LeaseLost) as lost:
        await store.renew_lease(lease, ttl_s=TTL, now=later(TTL + 2))
    assert lost.value.key == "user:u1"
    assert await store.leases("user:", now=later(TTL + 2)) == [taken]


async def test_renewing_many_at_once_tells_each_kept_from_each_lost(store: Store):
    kept = await store.acquire_lease("user:kept", "proc-a", ttl_s=TTL, now=T0)
    taken = await store.acquire_lease("user:taken", "proc-a", ttl_s=TTL, now=T0)
    freed = await store.acquire_lease("user:freed", "proc-a", ttl_s=TTL, now=T0)
    await store.acquire_lease("user:taken", "proc-b", ttl_s=TTL, now=later(TTL + 1))
    await store.release_lease(freed)
    renewed = await store.renew_leases([kept, taken, freed], ttl_s=TTL, now=later(TTL + 2))
    assert renewed[1:] == [None, None]
    assert renewed[0] is not None
    assert renewed[0].same_claim(kept)
    assert renewed[0].expires_at == later(2 * TTL + 2)
    with pytest.raises(OwnedElsewhere):  # the renewal was stored
        await store.acquire_lease("user:kept", "proc-b", ttl_s=TTL, now=later(TTL + 3))
    assert await store.renew_leases([], ttl_s=TTL, now=T0) == []


async def test_release_frees_the_key_and_the_next_token_is_greater(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    await store.release_lease(lease)
    assert await store.leases("user:", now=later(1)) == []
    with pytest.raises(LeaseLost):
        await store.renew_lease(lease, ttl_s=TTL, now=later(1))
    taken = await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(1))
    assert taken.token > lease.token
    assert taken.taken_from == ""  # given up, not taken over


async def test_release_by_a_former_holder_does_nothing(store: Store):
    old = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    taken = await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL + 1))
    await store.release_lease(old)
    assert await store.leases("user:", now=later(TTL + 2)) == [taken]


async def test_leases_lists_only_live_keys_under_the_prefix(store: Store):
    a = await store.acquire_lease("partition:1", "w1", ttl_s=TTL, now=T0)
    b = await store.acquire_lease("partition:0", "w2", ttl_s=TTL, now=T0)
    await store.acquire_lease("partition:2", "w2", ttl_s=1, now=T0)  # expired below
    await store.acquire_lease("user:partition:9", "w1", ttl_s=TTL, now=T0)
    await store.acquire_lease("worker:w1", "w1", ttl_s=TTL, now=T0)
    assert await store.leases("partition:", now=later(2)) == [b, a]
    assert {lease.key for lease in await store.leases("", now=later(2))} == {
        "partition:0",
        "partition:1",
        "user:partition:9",
        "worker:w1",
    }
    assert await store.leases("partition%", now=later(2)) == []  # no wildcards


async def test_racing_acquirers_on_two_connections_exactly_one_wins(backend: Backend):
    first, second = await backend.open(), await backend.open()
    try:
        keys = [f"user:race-{i:02d}" for i in range(20)]
        attempts = [
            store.acquire_lease(key, owner, ttl_s=TTL, now=T0)
            for key in keys
            for store, owner in ((first, "proc-a"), (second, "proc-b"))
        ]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        won = [o for o in outcomes if isinstance(o, Lease)]
        refused = [o for o in outcomes if isinstance(o, OwnedElsewhere)]
        assert len(won) == len(keys), outcomes
        assert len(refused) == len(keys), outcomes
        assert sorted(lease.key for lease in won) == keys
        assert await first.leases("user:race-", now=T0) == sorted(won, key=lambda x: x.key)
    finally:
        await first.close()
        await second.close()


async def test_nudges_count_up_for_the_holder_until_the_key_is_free(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    assert lease.nudges == 0
    assert await store.nudge_lease("user:u1", now=later(1)) is not None
    nudged = await store.nudge_lease("user:u1", now=later(2))
    assert nudged is not None
    assert nudged.same_claim(lease)
    assert nudged.nudges == 2
    renewed = await store.renew_lease(lease, ttl_s=TTL, now=later(3))
    assert renewed.nudges == 2
    assert await store.nudge_lease("user:nobody", now=later(3)) is None
    await store.release_lease(renewed)
    assert await store.nudge_lease("user:u1", now=later(4)) is None


# Fencing


async def test_fenced_writes_pass_while_the_lease_holds(store: Store, events: Events):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    fenced = store.fenced(lease)
    message = events.make("u1")
    reply = events.make("u1", "reply", role="assistant", reply_to=message.id)
    await fenced.append([message, reply], profile=profile("u1"))
    await fenced.mark_delivered("u1", reply.id, "tg:1")
    await fenced.save_profile(profile("u1", tone="formal"))
    await fenced.cache_answer("k", "u1", "cached", expires_at=later(60))
    assert await store.unanswered("u1") == []
    assert await store.owed_replies("u1") == []
    assert (await fenced.get_profile("u1")) == profile("u1", tone="formal")
    assert await fenced.cached_answer("k", now=T0) == "cached"
    assert await fenced.apply_summary(profile("u1", memory_summary="s"), [message.id]) == 1
    await fenced.erase_user("u1")
    assert await store.get_profile("u1") is None


async def test_fenced_writes_after_a_takeover_raise_and_write_nothing(store: Store, events: Events):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    fenced = store.fenced(lease)
    message = events.make("u1")
    reply = events.make("u1", "first", role="assistant", reply_to=message.id)
    await store.append([message], profile=profile("u1"))
    await fenced.append([reply])
    await store.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL + 1))

    late = events.make("u1", "second", role="assistant", reply_to=message.id)
    writes = [
        fenced.append([late]),
        fenced.save_profile(profile("u1", tone="formal")),
        fenced.cache_answer("k", "u1", "cached", expires_at=later(60)),
        fenced.apply_summary(profile("u1", memory_summary="s"), [message.id]),
        fenced.erase_user("u1"),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            await write
    turn = await store.load_turn("u1", limit=20, before=events.next_id())
    assert turn.memory.events == (message, reply)
    assert turn.profile == profile("u1")
    assert await store.cached_answer("k", now=T0) is None
    # What the front door did is recorded even so: the new holder must not send it again.
    await fenced.mark_delivered("u1", reply.id, "tg:2")
    assert await store.owed_replies("u1") == []


async def test_a_released_lease_fences_its_writes_too(store: Store, events: Events):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    await store.release_lease(lease)
    with pytest.raises(LeaseLost):
        await store.fenced(lease).append([events.make("u1")])
    assert await store.unanswered("u1") == []


async def test_an_expired_lease_nobody_took_still_writes(store: Store, events: Events):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    message = events.make("u1")
    await store.fenced(lease).append([message])  # the token, not the clock, fences
    assert await store.unanswered("u1") == [message]


async def test_a_fenced_view_on_another_connection_sees_the_takeover(
    backend: Backend, events: Events
):
    mine, theirs = await backend.open(), await backend.open()
    try:
        lease = await mine.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
        fenced = mine.fenced(lease)
        await theirs.acquire_lease("user:u1", "proc-b", ttl_s=TTL, now=later(TTL + 1))
        with pytest.raises(LeaseLost):
            await fenced.append([events.make("u1")])
        assert await theirs.unanswered("u1") == []
    finally:
        await mine.close()
        await theirs.close()


async def test_closing_a_fenced_view_leaves_the_store_open(store: Store):
    lease = await store.acquire_lease("user:u1", "proc-a", ttl_s=TTL, now=T0)
    await store.fenced(lease).close()
    await store.check()
    assert await store.leases("user:", now=T0) == [lease]
