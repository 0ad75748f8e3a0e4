"""The scale-out front door's Telegram side: raw updates relayed to a partitioned log, by long
polling (only while a lease says so) or by webhook, each confirmed to Telegram only after the
log confirmed it. Updates are not parsed beyond their id and their sender."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramConflictError, TelegramUnauthorizedError
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.telegram.polling import TelegramUnavailable
from adapters.telegram.updates import ALLOWED_UPDATES, RawGetUpdates, update_id_of
from engine.errors import BrokerUnavailable
from engine.partitions import partition_of

log = logging.getLogger(__name__)

Publish = Callable[[int, int, bytes], Awaitable[bool]]
"""(partition, update id, payload) -> whether the log already held it (a duplicate).

Raises BrokerUnavailable when the log did not confirm."""

KINDS = ("message", "edited_message", "callback_query")


class FrontMetrics:
    """`butler_front_*` on an injected registry; labels are closed sets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "butler_front_updates",
            "Updates the front door took from Telegram, by kind and outcome "
            "(published, duplicate, poisoned, failed).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "butler_front_publish_seconds",
            "From publishing an update to the broker's confirmation.",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.poller_leader = Gauge(
            "butler_front_poller_leader",
            "1 while this front door holds the poller lease (polls Telegram), else 0.",
            registry=registry,
        )


def kind_of(raw: Any) -> str:
    if isinstance(raw, dict):
        for kind in KINDS:
            if kind in raw:
                return kind
    return "unknown"


def sender_of(raw: Any) -> int | None:
    """The sender's user id (`from.id`), else the chat's id, else None."""
    if not isinstance(raw, dict):
        return None
    for kind in KINDS:
        event = raw.get(kind)
        if not isinstance(event, dict):
            continue
        for holder in (event.get("from"), event.get("chat"), (event.get("message") or {})):
            if isinstance(holder, dict):
                found = holder.get("id")
                if found is None and isinstance(holder.get("chat"), dict):
                    found = holder["chat"].get("id")
                if isinstance(found, int) and not isinstance(found, bool):
                    return found
    return None


@dataclass(slots=True)
class Relay:
    """Publishes one raw update to its partition, counting the outcome."""

    publish: Publish
    partitions: int
    metrics: FrontMetrics

    def partition(self, raw: Any) -> int:
        sender = sender_of(raw)
        return 0 if sender is None else partition_of(sender, self.partitions)

    async def relay(self, raw: Any, payload: bytes) -> bool:
        """Publish `raw` (its bytes `payload`); False when the broker did not confirm.

        An update without an update_id is counted as poisoned and reported done: nothing could
        ever read it, and refusing it would bring it back for a day."""
        kind = kind_of(raw)
        update_id = update_id_of(raw)
        if update_id is None:
            log.error("poisoned update skipped: no update_id")
            self.metrics.updates.labels(kind, "poisoned").inc()
            return True
        began = time.perf_counter()
        try:
            duplicate = await self.publish(self.partition(raw), update_id, payload)
        except BrokerUnavailable as exc:
            log.warning("update %s not published: %s", update_id, exc)
            self.metrics.updates.labels(kind, "failed").inc()
            return False
        self.metrics.publish_seconds.observe(time.perf_counter() - began)
        self.metrics.updates.labels(kind, "duplicate" if duplicate else "published").inc()
        return True

    async def relay_batch(self, batch: Sequence[Any]) -> tuple[int | None, bool]:
        """Publish a getUpdates batch in order; returns the offset confirming what the broker
        holds (None: nothing) and whether it stopped at a failure (the rest comes again)."""
        offset = None
        for raw in batch:
            update_id = update_id_of(raw)
            if not await self.relay(raw, json.dumps(raw, ensure_ascii=False).encode()):
                return offset, True
            if update_id is not None:
                offset = max(offset or 0, update_id + 1)
        return offset, False


async def _until(call: Awaitable[Any], *events: asyncio.Event) -> tuple[bool, Any]:
    """Run `call` unless one of `events` is set first (then cancel it): (finished, result)."""
    task = asyncio.ensure_future(call)
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait({task, *waiters}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False, None
    return True, task.result()


async def _pause(seconds: float, *events: asyncio.Event) -> None:
    await _until(asyncio.sleep(seconds), *events)  # noqa: TID251 - a backoff cut short by events


async def poll_and_relay(
    relay: Relay,
    bot: Bot,
    stop: asyncio.Event,
    *,
    gained: asyncio.Event,
    lost: asyncio.Event,
    timeout_s: int,
    backoff: Callable[[int], float] = lambda n: min(10.0, 0.25 * 2**n),
) -> None:
    """Long-poll while the lease is held (`gained` set; `lost` cuts a poll short) until `stop`;
    the offset moves only past published updates, and is confirmed before returning."""
    offset: int | None = None
    confirmed: int | None = None
    failures = 0
    try:
        while not stop.is_set():
            if not gained.is_set():
                await _until(gained.wait(), stop)
                continue
            request = RawGetUpdates(
                offset=offset, timeout=timeout_s, allowed_updates=ALLOWED_UPDATES
            )
            try:
                done, batch = await _until(bot(request, request_timeout=timeout_s + 15), stop, lost)
            except TelegramUnauthorizedError as exc:
                raise TelegramUnavailable("Telegram refused BUTLER_TELEGRAM_TOKEN") from exc
            except TelegramConflictError:
                log.warning("getUpdates conflict: another poller or a webhook")
                failures += 1
                await _pause(backoff(failures), stop, lost)
                continue
            except Exception as exc:  # noqa: BLE001 - any Bot API failure: back off, poll again
                log.warning("getUpdates failed: %s", type(exc).__name__)
                failures += 1
                await _pause(backoff(failures), stop, lost)
                continue
            if not done:
                continue  # stopped, or the lease was lost mid-poll
            confirmed = offset
            new_offset, retry = await relay.relay_batch(batch)
            if new_offset is not None:
                offset = new_offset
            if retry:
                failures += 1
                await _pause(backoff(failures), stop)
            else:
                failures = 0
    finally:
        if offset is not None and offset != confirmed:
            # Confirm what the broker holds now: otherwise it comes again (as duplicates).
            with contextlib.suppress(Exception):
                await bot(RawGetUpdates(offset=offset, timeout=0, limit=1))


def relay_webhook_app(relay: Relay, path: str, secret: str) -> web.Application:
    """The aiohttp application Telegram posts updates to: 200 once published, 503 when the
    broker did not confirm (Telegram retries), 401 for a wrong secret, 400 when malformed."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return web.json_response({"error": "wrong secret token"}, status=401)
        payload = await request.read()
        try:
            raw = json.loads(payload)
        except ValueError:
            relay.metrics.updates.labels("unknown", "poisoned").inc()
            log.warning("malformed update refused")
            return web.json_response({"error": "malformed update"}, status=400)
        if update_id_of(raw) is None:
            relay.metrics.updates.labels(kind_of(raw), "poisoned").inc()
            log.warning("update without an update_id refused")
            return web.json_response({"error": "malformed update"}, status=400)
        if await relay.relay(raw, payload):
            return web.json_response({"ok": True})
        return web.json_response({"error": "try again later"}, status=503)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(path, receive)
    return app
