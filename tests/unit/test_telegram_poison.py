"""Updates nobody can read: a poison update in a polled batch, an update of no known kind and
lone surrogates, by polling and by webhook."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiogram.types import Update
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from adapters.telegram.dispatch import Intake
from adapters.telegram.metrics import TelegramMetrics
from adapters.telegram.polling import poll
from adapters.telegram.updates import RawGetUpdates, scrub
from adapters.telegram.webhook import webhook_app
from engine.errors import StoreUnavailable

pytestmark = pytest.mark.anyio

SECRET = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}


class Dispatch:
    """A dispatcher stand-in: records the updates it saw, fails the chosen ones transiently."""

    def __init__(self, failing: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.failing = set(failing)
        self.seen: list[Update] = []

    async def feed_update(self, bot: Any, update: Update) -> None:
        self.seen.append(update)
        if update.update_id in self.failing:
            raise StoreUnavailable("down")


class Batches:
    """A bot answering getUpdates with raw JSON batches, then setting `stop`."""

    def __init__(self, stop: asyncio.Event, *batches: list[dict[str, Any]]) -> None:
        self.stop = stop
        self.batches = list(batches)
        self.offsets: list[int | None] = []

    async def __call__(self, method: Any, request_timeout: int | None = None) -> Any:
        assert isinstance(method, RawGetUpdates)
        self.offsets.append(method.offset)
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)


def text(update_id: int, user: int, body: str = "hello") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "text": body,
        },
    }


def poison(update_id: int) -> dict[str, Any]:
    bad = text(update_id, 99, "secret words")
    bad["message"]["message_id"] = "not-a-number"
    bad["message"]["date"] = "yesterday"
    return bad


def counted(metrics: TelegramMetrics, kind: str, outcome: str) -> float:
    return float(metrics.updates.labels(kind, outcome)._value.get())


async def test_a_poison_update_is_skipped_confirmed_and_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    batch = [text(1, 10), poison(2), text(3, 20)]
    # User 20's update fails once (store down): the batch comes again, the poison with it
    # (as after a lost confirmation), and the poison must not be counted twice.
    bot = Batches(stop, batch, batch[1:])
    dispatch = Dispatch(failing={3})
    metrics = TelegramMetrics(CollectorRegistry())
    intake = Intake(bot, dispatch, metrics)  # type: ignore[arg-type]

    async def recover() -> None:
        while len(dispatch.seen) < 2:  # noqa: ASYNC110 - a stand-in without events
            await asyncio.sleep(0)  # noqa: TID251 - let the poll take its step
        dispatch.failing.clear()

    async with asyncio.timeout(10):
        await asyncio.gather(poll(intake, stop, timeout_s=0, backoff=lambda n: 0.0), recover())
    assert [u.update_id for u in dispatch.seen] == [1, 3, 3]
    assert bot.offsets[:3] == [None, 3, 4]  # the poison is confirmed with the first update
    assert counted(metrics, "unknown", "poisoned") == 1
    assert "update_id=2" in caplog.text
    assert "message.date" in caplog.text  # where it failed...
    assert "secret words" not in caplog.text  # ...never what it said
    assert "yesterday" not in caplog.text


async def test_a_batch_of_poison_alone_moves_the_offset() -> None:
    stop = asyncio.Event()
    bot = Batches(stop, [poison(5), poison(6)])
    metrics = TelegramMetrics(CollectorRegistry())
    intake = Intake(bot, Dispatch(), metrics)  # type: ignore[arg-type]
    await asyncio.wait_for(poll(intake, stop, timeout_s=0), 10)
    assert bot.offsets[1] == 7
    assert counted(metrics, "unknown", "poisoned") == 2


async def test_lone_surrogates_are_replaced_and_pairs_kept() -> None:
    decoded = json.loads('{"a": ["x\\ud800y", "\\ud83d\\ude00", "\\udfff"], "n": 1}')
    assert scrub(decoded) == {"a": ["x\ufffdy", "\U0001f600", "\ufffd"], "n": 1}
    stop = asyncio.Event()
    dispatch = Dispatch()
    bot = Batches(stop, [text(1, 10, "broken \ud800 text")])
    intake = Intake(bot, dispatch, TelegramMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    await asyncio.wait_for(poll(intake, stop, timeout_s=0), 10)
    assert dispatch.seen[0].message is not None
    assert dispatch.seen[0].message.text == "broken \ufffd text"
    dispatch.seen[0].message.text.encode()  # what SQLite and the tokenizer will need


async def test_webhook_answers_200_to_what_nobody_can_read_and_400_to_bad_json() -> None:
    dispatch = Dispatch()
    metrics = TelegramMetrics(CollectorRegistry())
    intake = Intake(object(), dispatch, metrics)  # type: ignore[arg-type]
    app = webhook_app(intake, "/hook", "s3cret")
    async with TestClient(TestServer(app)) as client:
        unknown = await client.post("/hook", json={"update_id": 9}, headers=SECRET)
        bad = await client.post("/hook", json=poison(10), headers=SECRET)
        again = await client.post("/hook", json=poison(10), headers=SECRET)
        not_json = await client.post("/hook", data=b"{not json", headers=SECRET)
        no_id = await client.post("/hook", json=[1, 2], headers=SECRET)
        raw = b'{"update_id": 11, "message": {"message_id": 11, "date": 0, "chat": {"id": 5, '
        raw += b'"type": "private"}, "from": {"id": 5, "is_bot": false, "first_name": "U"}, '
        raw += b'"text": "a \\ud800 b"}}'
        lone = await client.post(
            "/hook", data=raw, headers=SECRET | {"Content-Type": "application/json"}
        )
    assert [r.status for r in (unknown, bad, again, not_json, no_id, lone)] == [
        200,
        200,
        200,
        400,
        400,
        200,
    ]
    assert counted(metrics, "unknown", "ignored") == 1
    assert counted(metrics, "unknown", "poisoned") == 1  # the retried delivery counts once
    assert counted(metrics, "unknown", "malformed") == 2
    assert [u.update_id for u in dispatch.seen] == [11]
    assert dispatch.seen[0].message is not None
    assert dispatch.seen[0].message.text == "a \ufffd b"
