"""`PartitionLog` on NATS JetStream: one stream (subjects `butler.in.<partition>`), the update
id as `Nats-Msg-Id` for dedupe, and one durable pull consumer `part-<n>` per partition that a
taking-over process recreates from the ack floor so unconfirmed updates come first, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from engine.errors import BrokerUnavailable, ConfigurationError
from engine.ports import Handler

log = logging.getLogger(__name__)

RETENTION_S = 7 * 24 * 3600.0
"""Limits retention: an update stays a week, confirmed or not (consumers keep their own ack
floor, so many durable consumers can read one stream; a work queue would allow one per subject
but forbids the recreate-from-floor take-over)."""

STREAM = "butler_updates"
"""The stream's default name (NATS names are case-sensitive: `nats stream info butler_updates`)."""

_PARTITIONS = re.compile(r"partitions=(\d+)")


@contextlib.asynccontextmanager
async def _mapped(what: str) -> AsyncIterator[None]:
    """Map every NATS failure to `BrokerUnavailable("nats: <what>: ...")`, once, at the edge."""
    try:
        yield
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BrokerUnavailable(f"nats: {what}: {type(exc).__name__} {exc}".strip()) from exc


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//", url)


NO_RESPONDER_RETRY_S = 0.05


class NatsPartitionLog:
    """The partition log on a JetStream stream; see the module docstring for the layout."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        partitions: int,
        stream: str,
        subjects: str,
        ack_wait_s: float,
        batch: int,
        retry_after_s: float = 0.5,
        idle_fetch_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._partitions = partitions
        self.stream = stream
        self.subjects = subjects
        self._ack_wait_s = ack_wait_s
        self._batch = batch
        self.retry_after_s = retry_after_s
        self.idle_fetch_s = idle_fetch_s
        self.publish_timeout_s = 5.0
        self.verify_every_s = 1.0
        self.publishes_resent = 0
        """Publishes sent again because no stream took them (tests wait on it)."""

    @classmethod
    async def connect(
        cls,
        urls: Sequence[str],
        *,
        partitions: int,
        replicas: int = 1,
        stream: str = STREAM,
        subjects: str = "butler.in",
        ack_wait_s: float = 30.0,
        batch: int = 16,
        duplicate_window_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        ready_timeout_s: float = 30.0,
    ) -> NatsPartitionLog:
        """Connect (reconnecting forever afterwards) and ensure the stream.

        A cluster that answers but cannot place the stream yet (a node still joining, no
        meta leader elected: what a stack started all at once sees) is asked again until
        `ready_timeout_s` has passed.

        Raises:
            BrokerUnavailable: no server answered within `connect_timeout_s`, or the cluster
                could not place the stream within `ready_timeout_s`.
            ConfigurationError: the stream exists for another partition count.
        """
        if partitions < 1:
            raise ConfigurationError(f"BUTLER_BROKER_PARTITIONS must be positive, not {partitions}")
        nc = await _connect(urls, connect_timeout_s)
        try:
            js = nc.jetstream(timeout=connect_timeout_s)
            await _ensure_stream(
                js,
                ready_timeout_s=ready_timeout_s,
                stream=stream,
                subjects=subjects,
                partitions=partitions,
                replicas=replicas,
                duplicate_window_s=duplicate_window_s,
            )
        except BaseException:
            await nc.close()
            raise
        return cls(
            nc,
            js,
            partitions=partitions,
            stream=stream,
            subjects=subjects,
            ack_wait_s=ack_wait_s,
            batch=batch,
        )

    @property
    def partitions(self) -> int:
        return self._partitions

    @property
    def client(self) -> Client:
        """The connection (the front door's KV lease shares it)."""
        return self._nc

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self._partitions:
            raise ValueError(f"no partition {partition} among {self._partitions}")

    async def publish(self, partition: int, update_id: int, payload: bytes) -> None:
        await self.publish_checked(partition, update_id, payload)

    async def publish_checked(self, partition: int, update_id: int, payload: bytes) -> bool:
        """`publish`, saying whether the stream already held `update_id` (a duplicate)."""
        self._check(partition)
        timeout = min(self._ack_wait_s, self.publish_timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout
        async with _mapped("publish"):
            while True:
                try:
                    ack = await self._js.publish(
                        f"{self.subjects}.{partition}",
                        payload,
                        stream=self.stream,
                        headers={"Nats-Msg-Id": str(update_id)},
                        timeout=timeout,
                    )
                    return bool(ack.duplicate)
                except nats.js.errors.NoStreamResponseError:
                    # Nobody took it (a stream just made, or electing a leader after a node's
                    # loss): nothing was stored, so it is safe to send again until the deadline.
                    if asyncio.get_running_loop().time() + NO_RESPONDER_RETRY_S > deadline:
                        raise
                    self.publishes_resent += 1
                    await asyncio.sleep(NO_RESPONDER_RETRY_S)  # noqa: TID251 - a retry, with a deadline

    async def _take_over(self, partition: int) -> datetime | None:
        """Recreate `part-<n>` from its ack floor; returns the new consumer's creation time."""
        name = f"part-{partition}"
        start = 1
        async with _mapped("take over"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await self._js.consumer_info(self.stream, name)
                floor = (info.ack_floor.stream_seq if info.ack_floor else 0) or 0
                # A consumer that confirmed nothing yet reports a floor of 0: it starts where
                # it was created to start, not at the stream's first message (a replay).
                began = (info.config.opt_start_seq if info.config else None) or 1
                start = max(floor + 1, began)
                await self._js.delete_consumer(self.stream, name)
            created = await self._js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=name,
                    filter_subject=f"{self.subjects}.{partition}",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                    max_ack_pending=self._batch,
                    ack_wait=self._ack_wait_s,
                    inactive_threshold=None,
                ),
            )
        return _created(created)

    async def _still_ours(self, partition: int, created: datetime | None) -> bool:
        async with _mapped("consumer info"):
            try:
                info = await self._js.consumer_info(self.stream, f"part-{partition}")
            except nats.js.errors.NotFoundError:
                return False
        return _created(info) == created

    async def consume(
        self, partition: int, handle: Handler, *, holding: Callable[[], bool]
    ) -> None:
        self._check(partition)
        name = f"part-{partition}"
        suspect = [False]

        async def on_deleted(_msg: Msg) -> None:
            suspect[0] = True  # maybe a take-over elsewhere: verify before the next update

        async with _mapped("subscribe"):
            advisory = await self._nc.subscribe(
                f"$JS.EVENT.ADVISORY.CONSUMER.DELETED.{self.stream}.{name}", cb=on_deleted
            )
        try:
            created = await self._take_over(partition)
            async with _mapped("subscribe"):
                sub = await self._js.pull_subscribe_bind(durable=name, stream=self.stream)
            try:
                await self._consume(
                    partition, sub, handle=handle, holding=holding, created=created, suspect=suspect
                )
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await advisory.unsubscribe()

    async def _consume(
        self,
        partition: int,
        sub: JetStreamContext.PullSubscription,
        *,
        handle: Handler,
        holding: Callable[[], bool],
        created: datetime | None,
        suspect: list[bool],
    ) -> None:
        last_seq = 0
        clock = asyncio.get_running_loop().time
        verify_at = clock()
        while holding():
            # Taken over by a later consume, here or elsewhere? Asked of the server when the
            # deletion advisory came, and once a `verify_every_s` besides (an advisory can be
            # lost): a consumer-info request per fetch doubled the broker's work per update.
            if suspect[0] or clock() >= verify_at:
                suspect[0] = False
                if not await self._still_ours(partition, created):
                    return
                verify_at = clock() + self.verify_every_s
            async with _mapped("fetch"):
                try:
                    msgs = await sub.fetch(self._batch, timeout=self.idle_fetch_s)
                except TimeoutError:  # nats-py raises its own or asyncio's when none came
                    continue
            failed = False
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq <= last_seq:  # a redelivery of one this consumer confirmed
                    async with _mapped("ack"):
                        await msg.ack()
                    continue
                if not holding():
                    return
                if suspect[0]:
                    suspect[0] = False
                    if not await self._still_ours(partition, created):
                        return
                if not await handle(msg.data):
                    failed = True
                    break
                async with _mapped("ack"):
                    await msg.ack_sync(timeout=5.0)
                last_seq = seq
            if failed:
                await asyncio.sleep(self.retry_after_s)  # noqa: TID251 - pause after a refusal
                if not holding() or not await self._still_ours(partition, created):
                    return
                # From the floor again: the refused update comes first, the rest after it.
                created = await self._take_over(partition)

    async def lag(self, partition: int) -> int:
        self._check(partition)
        subject = f"{self.subjects}.{partition}"
        async with _mapped("lag"):
            try:
                info = await self._js.consumer_info(self.stream, f"part-{partition}")
            except nats.js.errors.NotFoundError:
                stream = await self._js.stream_info(self.stream, subjects_filter=subject)
                return int((stream.state.subjects or {}).get(subject, 0))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.drain()
        with contextlib.suppress(Exception):
            await self._nc.close()


def _created(info: Any) -> datetime | None:
    value = getattr(info, "created", None)
    return value if isinstance(value, datetime) else None


async def _quiet(exc: Exception) -> None:
    log.debug("nats: %s", type(exc).__name__)


async def _connect(urls: Sequence[str], timeout_s: float) -> Client:
    nc = Client()
    where = ", ".join(_redacted(u) for u in urls)
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=list(urls),
                connect_timeout=max(1, int(min(timeout_s, 2.0))),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=_quiet,
            ),
            timeout_s,
        )
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise BrokerUnavailable(
            f"nats: no server answered at BUTLER_BROKER_URL ({where}) within {timeout_s:g} s"
        ) from exc
    return nc


NOT_PLACED_YET = 10005
"""JetStream's `no suitable peers for placement`: fewer peers are known to be online than the
stream's replicas, as while a cluster forms or a node rejoins."""

NOT_READY_RETRY_S = 0.25


def _not_ready_yet(exc: BaseException) -> bool:
    """A refusal a forming cluster gives and a formed one does not."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == NOT_PLACED_YET


async def _ensure_stream(
    js: JetStreamContext,
    *,
    ready_timeout_s: float,
    stream: str,
    subjects: str,
    partitions: int,
    replicas: int,
    duplicate_window_s: float,
) -> None:
    """Find the stream or add it, asked again while the cluster is not ready to place it."""
    config = StreamConfig(
        name=stream,
        description=f"butler updates; partitions={partitions}",
        subjects=[f"{subjects}.*"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=duplicate_window_s,
        max_age=RETENTION_S,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout_s
    warned = False
    async with _mapped("stream"):
        while True:
            try:
                try:
                    info = await js.stream_info(stream)
                except nats.js.errors.NotFoundError:
                    await js.add_stream(config)
                    return
                break
            except (nats.errors.Error, TimeoutError) as exc:
                if not _not_ready_yet(exc) or loop.time() >= deadline:
                    raise
                if not warned:
                    log.warning(
                        "nats: the cluster cannot place stream %s yet; asking again", stream
                    )
                    warned = True
            await asyncio.sleep(NOT_READY_RETRY_S)  # noqa: TID251 - a retry with a deadline
    found = _PARTITIONS.search(info.config.description or "")
    if found is None or int(found.group(1)) != partitions:
        had = found.group(1) if found else "unknown"
        raise ConfigurationError(
            f"BUTLER_BROKER_PARTITIONS={partitions} but stream {stream} was made for "
            f"{had} partitions (a partition count cannot change under a stream)"
        )
    if (info.config.num_replicas or 1) != replicas:
        log.warning(
            "stream %s keeps %s replicas (BUTLER_BROKER_REPLICAS asks %s)",
            stream,
            info.config.num_replicas,
            replicas,
        )
