"""The bounded mailbox: FIFO, explicit overflow, a consumer that waits with a deadline."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from actors.mailbox import Mailbox


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox[int](0)
    with pytest.raises(ValueError, match="capacity"):
        Mailbox[int](-1)


def test_capacity_is_reported() -> None:
    assert Mailbox[int](3).capacity == 3


def test_offer_refuses_when_full() -> None:
    box = Mailbox[int](2)
    assert box.offer(1)
    assert box.offer(2)
    assert not box.offer(3)
    assert list(box) == [1, 2]
    assert len(box) == 2


def test_force_ignores_the_bound() -> None:
    box = Mailbox[int](1)
    assert box.offer(1)
    assert box.offer(2, force=True)
    assert box.offer(3, force=True)
    assert list(box) == [1, 2, 3]
    assert not box.offer(4)  # still refuses without force


def test_push_front_goes_to_the_head_even_when_full() -> None:
    box = Mailbox[str](2)
    box.offer("a")
    box.offer("b")
    box.push_front("retry")
    assert list(box) == ["retry", "a", "b"]


def test_replace_changes_the_first_match_in_place() -> None:
    box = Mailbox[str](5)
    for item in ("a1", "b1", "a2"):
        box.offer(item)
    assert box.replace(lambda s: s.startswith("a"), "A")
    assert list(box) == ["A", "b1", "a2"]
    assert not box.replace(lambda s: s == "zzz", "Z")
    assert list(box) == ["A", "b1", "a2"]


@pytest.mark.anyio
async def test_items_come_out_in_order() -> None:
    box = Mailbox[int](10)
    for i in range(5):
        box.offer(i)
    assert [await box.take() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(box) == 0


@pytest.mark.anyio
async def test_take_returns_at_once_when_items_wait() -> None:
    box = Mailbox[str](2)
    box.offer("x")
    # A zero timeout would give None if take had to wait at all.
    assert await box.take(timeout=0) == "x"


@pytest.mark.anyio
async def test_take_times_out_with_none() -> None:
    box = Mailbox[int](2)
    with anyio.fail_after(5):
        assert await box.take(timeout=0.01) is None
    with anyio.fail_after(5):
        assert await box.take(timeout=0) is None


async def _waiting_take(box: Mailbox[str]) -> asyncio.Task[str | None]:
    task = asyncio.create_task(box.take())
    await anyio.lowlevel.checkpoint()  # let the task reach its wait
    assert not task.done()
    return task


@pytest.mark.anyio
async def test_wake_returns_none_to_a_waiting_consumer() -> None:
    box = Mailbox[str](2)
    task = await _waiting_take(box)
    box.wake()
    with anyio.fail_after(5):
        assert await task is None


@pytest.mark.anyio
async def test_offer_wakes_a_waiting_consumer() -> None:
    box = Mailbox[str](2)
    task = await _waiting_take(box)
    assert box.offer("hello")
    with anyio.fail_after(5):
        assert await task == "hello"
    assert len(box) == 0


@pytest.mark.anyio
async def test_push_front_wakes_a_waiting_consumer() -> None:
    box = Mailbox[str](2)
    task = await _waiting_take(box)
    box.push_front("again")
    with anyio.fail_after(5):
        assert await task == "again"


@pytest.mark.anyio
async def test_wake_without_a_consumer_is_harmless() -> None:
    box = Mailbox[str](2)
    box.wake()
    box.offer("x")
    assert await box.take(timeout=0) == "x"


@pytest.mark.anyio
async def test_a_cancelled_take_leaves_the_mailbox_usable() -> None:
    box = Mailbox[str](2)
    task = await _waiting_take(box)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    box.offer("later")
    assert await box.take(timeout=0) == "later"
