"""The polling front door's lease in a JetStream key-value bucket: one key, `kv.create` to take
it (refused while another holds it), `kv.update(last=revision)` to renew it every TTL/3, the
bucket's TTL to free it when its holder dies, and a delete to hand it over on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from engine.errors import BrokerUnavailable

log = logging.getLogger(__name__)

_FAILURES = (nats.errors.Error, TimeoutError, OSError)


class KvLease:
    """Holds `key` of `bucket` while `run` runs; `held` says whether it does now and `lost`
    is set whenever it does not (a poller waits on it to stop at once)."""

    def __init__(
        self,
        nc: Client,
        *,
        owner: str,
        ttl_s: float,
        bucket: str = "butler_front",
        key: str = "poller",
        replicas: int = 1,
        on_change: Callable[[bool], None] = lambda held: None,
    ) -> None:
        self._js = nc.jetstream(timeout=max(1.0, ttl_s / 3))
        self.owner = owner
        self.ttl_s = ttl_s
        self.bucket = bucket
        self.key = key
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._revision = 0
        self._on_change = on_change
        self.held = False
        self.lost = asyncio.Event()
        self.lost.set()
        self.gained = asyncio.Event()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    bucket=self.bucket, history=1, ttl=self.ttl_s, replicas=self.replicas
                )
        return self._kv

    def _set(self, held: bool) -> None:
        if held == self.held:
            return
        self.held = held
        if held:
            self.lost.clear()
            self.gained.set()
            log.info("poller lease taken (%s)", self.bucket)
        else:
            self.gained.clear()
            self.lost.set()
            log.warning("poller lease lost or not renewed (%s)", self.bucket)
        self._on_change(held)

    async def attempt(self) -> bool:
        """Take or renew the lease once; returns whether it is held now."""
        try:
            kv = await self._bucket()
            if self.held:
                self._revision = await kv.update(self.key, self.owner.encode(), last=self._revision)
            else:
                self._revision = await kv.create(self.key, self.owner.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            self._set(False)  # another holds it (or took it after ours expired)
        except _FAILURES as exc:
            log.warning("poller lease: %s", type(exc).__name__)
            self._set(False)
        else:
            self._set(True)
        return self.held

    async def run(self, stop: asyncio.Event) -> None:
        """Take and renew the lease every TTL/3 until `stop`; then hand it over."""
        try:
            while not stop.is_set():
                await self.attempt()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.ttl_s / 3)
        finally:
            await self.release()

    async def release(self) -> None:
        """Delete the key if held (another front door takes over at its next try)."""
        if not self.held or self._kv is None:
            return
        self._set(False)
        with contextlib.suppress(*_FAILURES, BrokerUnavailable):
            await self._kv.delete(self.key, last=self._revision)
