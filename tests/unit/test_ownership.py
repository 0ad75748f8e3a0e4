"""One process per user: two registries with distinct owners on one store, as two processes
on one data directory would be. Claims, refusals, hand-overs, takeovers and lost claims, with
the store's real leases (the memory adapter, which passes the lease contract)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from actors.observe import ClaimRefused, LeasesRenewed, LeaseTakenOver, OwnershipLost
from actors.ownership import StoreUserLeases, gone_from_this_host, process_owner_id
from actors.registry import Accepted, HandedOver, Registry
from engine.domain import MemoryEvent
from engine.errors import OwnedElsewhere
from tests.fakes import CollectingSink, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import Recorder, make_deps

pytestmark = pytest.mark.anyio

TTL = 15.0


@dataclass
class Process:
    """One registry as one Butler process would run it: its owner id, model, sink."""

    owner: str
    registry: Registry
    llm: ScriptedLLM
    sink: CollectingSink
    recorder: Recorder
    lost: list[str] = field(default_factory=list)


@asynccontextmanager
async def process(
    owner: str,
    store: MemoryStore,
    clock: ManualClock,
    *,
    gate: asyncio.Event | None = None,
    hand_over: bool = True,
    adopt: bool = False,
) -> AsyncIterator[Process]:
    llm, sink, recorder = ScriptedLLM(gate=gate), CollectingSink(), Recorder()
    deps = make_deps(store=store, llm=llm, sink=sink, clock=clock, observer=recorder)
    ownership = StoreUserLeases(store, clock, owner=owner, ttl_s=TTL)
    lost: list[str] = []
    registry = Registry(deps, ownership, hand_over=hand_over, on_lost=lost.append, adopt=adopt)
    async with registry:
        yield Process(owner, registry, llm, sink, recorder, lost)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.001)  # noqa: TID251 - polls a condition, with a deadline


def replies_per_message(store: MemoryStore, user_id: str) -> dict[str, int]:
    """For each stored user message, how many assistant events answer it."""
    events = store.events.get(user_id, {}).values()
    counts = {e.id: 0 for e in events if e.role == "user"}
    for event in events:
        if event.role == "assistant":
            counts[event.reply_to] = counts.get(event.reply_to, 0) + 1
    return counts


async def test_a_user_served_by_one_process_is_refused_by_another():
    store, clock, gate = MemoryStore(), ManualClock(), asyncio.Event()
    async with (
        process("host:1:a", store, clock, gate=gate) as a,
        process("host:2:b", store, clock, hand_over=False) as b,
    ):
        await a.registry.tell_text("u", "first")
        await until(lambda: a.llm.calls)
        with pytest.raises(OwnedElsewhere) as refused:
            await b.registry.tell_text("u", "second")
        assert refused.value.owner == "host:1:a"
        assert refused.value.key == "user:u"
        assert [e.content for e in store.events["u"].values()] == ["first"]  # b stored nothing
        assert ClaimRefused(handed_over=False) in b.recorder.seen
        gate.set()
        await a.sink.wait_for(1)
    assert b.sink.replies == []


async def test_a_message_handed_over_is_answered_once_by_the_owner():
    store, clock, gate = MemoryStore(), ManualClock(), asyncio.Event()
    async with (
        process("host:1:a", store, clock, gate=gate) as a,
        process("host:2:b", store, clock) as b,
    ):
        first = await a.registry.tell_text("u", "first")
        await until(lambda: a.llm.calls)  # a's turn is in flight
        second = await b.registry.tell_text("u", "second")
        assert isinstance(second, HandedOver)
        assert store.events["u"][second.event_id].content == "second"  # stored by b
        assert "u" in b.registry.leases.handed
        await a.registry.leases.renew()  # a's round sees the nudge on its lease
        gate.set()
        replies = await a.sink.wait_for(2)
        assert isinstance(first, Accepted)
        assert [r.reply_to for r in replies] == [first.event_id, second.event_id]
        await b.registry.leases.renew()  # b sees it answered and stops retrying
        assert "u" not in b.registry.leases.handed
        assert b.registry.get("u") is None
    assert b.sink.replies == []
    assert replies_per_message(store, "u") == {first.event_id: 1, second.event_id: 1}


async def test_a_hand_over_to_nobody_is_served_here():
    store, clock = MemoryStore(), ManualClock()
    async with process("host:2:b", store, clock) as b:
        lease = await store.acquire_lease("user:u", "host:1:a", ttl_s=TTL, now=clock.now())
        ticket = await b.registry.tell_text("u", "while a holds it")  # stored, a nudged
        assert isinstance(ticket, HandedOver)
        assert store.data.leases["user:u"].nudges == 1
        await store.release_lease(lease)  # a passivated before collecting it
        await b.registry.leases.renew()  # b's retry finds nobody serving u and serves it
        replies = await b.sink.wait_for(1)
        assert replies[0].reply_to == ticket.event_id
        assert "u" not in b.registry.leases.handed


async def test_renewal_keeps_the_user_and_expiry_lets_another_take_it():
    store, clock, gate = MemoryStore(), ManualClock(), asyncio.Event()
    async with (
        process("host:1:a", store, clock, gate=gate) as a,
        process("host:2:b", store, clock, hand_over=False) as b,
    ):
        first = await a.registry.tell_text("u", "first")
        await until(lambda: a.llm.calls)
        for _ in range(5):  # a minute of rounds, each inside the time to live
            clock.advance(TTL / 3)
            await a.registry.leases.renew()
            with pytest.raises(OwnedElsewhere):
                await b.registry.wake("u")
        assert LeasesRenewed(1, 0, 0) in a.recorder.seen
        held = a.registry.leases.held("u")
        assert held is not None
        assert held.expires_at == clock.now() + timedelta(seconds=TTL)

        clock.advance(TTL + 1)  # a stops renewing (a paused process): its claim expires
        assert await b.registry.wake("u")
        assert LeaseTakenOver() in b.recorder.seen
        # b answered the message stored unanswered; a's turn, when it ends, writes nothing.
        await b.sink.wait_for(1)
        gate.set()
        await until(lambda: a.registry.get("u") is None)
        assert a.lost == ["u"]
        assert OwnershipLost() in a.recorder.seen
    assert a.sink.replies == []
    assert isinstance(first, Accepted)
    assert replies_per_message(store, "u") == {first.event_id: 1}


async def test_a_renewal_round_stops_an_actor_whose_claim_was_taken():
    store, clock, gate = MemoryStore(), ManualClock(), asyncio.Event()
    async with process("host:1:a", store, clock, gate=gate) as a:
        await a.registry.tell_text("u", "first")
        await until(lambda: a.llm.calls)
        clock.advance(TTL + 1)
        taken = await store.acquire_lease("user:u", "host:9:z", ttl_s=TTL, now=clock.now())
        await a.registry.leases.renew()
        assert LeasesRenewed(0, 1, 0) in a.recorder.seen
        assert a.registry.leases.held("u") is None
        gate.set()
        await until(lambda: a.registry.get("u") is None)
        assert a.lost == ["u"]
        assert store.data.leases["user:u"].same_claim(taken)  # a released nothing of z's
        assert store.data.leases["user:u"].nudges == 1  # what a held is z's to answer
    assert a.sink.replies == []
    assert all(e.role == "user" for e in store.events["u"].values())


async def test_passivation_and_drain_release_the_claims():
    store, clock = MemoryStore(), ManualClock()
    async with process("host:1:a", store, clock) as a:
        await a.registry.tell_text("u", "hello")
        await a.registry.tell_text("v", "hello")
        await a.sink.wait_for(2)
        assert {lease.owner for lease in await store.leases("user:", now=clock.now())} == {
            "host:1:a"
        }
        clock.advance(a.registry.deps.settings.idle_timeout_s + 1)
        await a.registry.leases.renew()  # nobody took them: renewed although expired
        a.registry.get("u").mailbox.wake()  # type: ignore[union-attr]
        await until(lambda: a.registry.get("u") is None)
        await a.registry.leases.released("u")
        assert [lease.key for lease in await store.leases("user:", now=clock.now())] == ["user:v"]
    assert await store.leases("user:", now=clock.now()) == []
    async with process("host:2:b", store, clock) as b:  # no wait for any expiry
        assert await b.registry.wake("u")
        held = b.registry.leases.held("u")
        assert held is not None
        assert held.token == 2
        assert held.taken_from == ""  # given up, not taken over


async def test_new_ids_sort_after_those_of_a_process_whose_clock_ran_ahead():
    store, behind = MemoryStore(), ManualClock()
    ahead = ManualClock(current=behind.current + timedelta(minutes=5))
    async with process("host:1:a", store, ahead) as a:
        await a.registry.tell_text("u", "from the future")
        await a.sink.wait_for(1)
    newest = max(store.events["u"])
    async with process("host:2:b", store, behind) as b:
        ticket = await b.registry.tell_text("u", "from the past")
        await b.sink.wait_for(1)
    assert isinstance(ticket, Accepted)
    assert ticket.event_id > newest
    ids = sorted(store.events["u"])
    assert [store.events["u"][i].content for i in ids if store.events["u"][i].role == "user"] == [
        "from the future",
        "from the past",
    ]


async def test_erase_under_another_process_is_refused_and_deletes_nothing():
    store, clock, gate = MemoryStore(), ManualClock(), asyncio.Event()
    async with (
        process("host:1:a", store, clock, gate=gate) as a,
        process("host:2:b", store, clock) as b,
    ):
        await a.registry.tell_text("u", "keep me")
        await until(lambda: a.llm.calls)
        with pytest.raises(OwnedElsewhere):
            await b.registry.erase("u")
        assert [e.content for e in store.events["u"].values()] == ["keep me"]
        gate.set()
        await a.sink.wait_for(1)
        await a.registry.erase("u")
        assert "u" not in store.events
        assert await store.leases("user:", now=clock.now()) == []


def gone_pid() -> int:
    """The pid of a process that ran, exited and was reaped: it names no process now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_dead_holder_on_this_host_is_taken_over_at_once():
    store, clock = MemoryStore(), ManualClock()
    dead = f"{socket.gethostname()}:{gone_pid()}:0badc0de"
    await store.append([MemoryEvent("0001", "u", "user", "left behind", "text", clock.now(), 3)])
    await store.acquire_lease("user:u", dead, ttl_s=TTL, now=clock.now())
    async with process(process_owner_id(), store, clock) as b:
        assert await b.registry.wake("u")  # long before the dead one's expiry
        replies = await b.sink.wait_for(1)
        held = b.registry.leases.held("u")
    assert replies[0].reply_to == "0001"
    assert held is not None
    assert held.taken_from == dead
    assert LeaseTakenOver() in b.recorder.seen


def test_only_a_gone_process_of_this_host_counts_as_gone():
    host, pid = socket.gethostname(), gone_pid()
    assert gone_from_this_host(f"{host}:{pid}:ab")
    assert not gone_from_this_host(f"{host}:{os.getppid()}:ab")  # alive: the test's parent
    assert gone_from_this_host(f"{host}:{os.getpid()}:ab")  # an earlier process of this pid
    assert not gone_from_this_host(f"elsewhere.example:{pid}:ab")
    assert not gone_from_this_host("not an owner id")
    assert not gone_from_this_host(f"{host}:0:ab")
    assert process_owner_id().startswith(f"{host}:{os.getpid()}:")


def test_a_zombie_counts_as_gone():
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert gone_from_this_host(f"{host}:{child.pid}:ab")
    finally:
        child.wait()


@pytest.mark.parametrize("adopt", [True, False])
async def test_a_service_adopts_what_a_stuck_process_left_unanswered(adopt: bool):
    store, clock = MemoryStore(), ManualClock()
    left = MemoryEvent("0001", "u", "user", "left behind", "text", clock.now(), 3)
    await store.append([left])
    await store.acquire_lease("user:u", "elsewhere:1:stuck", ttl_s=TTL, now=clock.now())
    await store.append([MemoryEvent("0002", "v", "user", "answered", "text", clock.now(), 3)])
    await store.append(
        [MemoryEvent("0003", "v", "assistant", "done", "text", clock.now(), 3, "0002")]
    )
    await store.mark_delivered("v", "0003", "sent")
    await store.acquire_lease("user:v", "elsewhere:1:stuck", ttl_s=TTL, now=clock.now())
    async with process("host:2:b", store, clock, adopt=adopt) as b:
        for _ in range(3):  # a time to live of rounds: the stuck claim is not yet expired
            await b.registry.leases.renew()
        assert b.registry.get("u") is None
        clock.advance(TTL + 1)
        for _ in range(3):
            await b.registry.leases.renew()
        if adopt:
            replies = await b.sink.wait_for(1)
            assert replies[0].reply_to == "0001"
            assert LeaseTakenOver() in b.recorder.seen
        else:  # a terminal serves its own user only
            assert b.registry.get("u") is None
        assert b.registry.get("v") is None  # nothing was owed to v: left alone
    assert replies_per_message(store, "u") == {"0001": 1 if adopt else 0}
