"""The NATS partition log against real `nats-server` processes: losing a node of three, a dead
URL, a stream made for another partition count, and a publish that finds no stream yet."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

import nats
import pytest

from adapters.broker.nats import NatsPartitionLog
from engine.errors import BrokerUnavailable, ConfigurationError
from tests.support.nats_cluster import NatsCluster

pytestmark = pytest.mark.anyio


class _Names(TypedDict):
    stream: str
    subjects: str


def _names() -> _Names:
    tag = uuid.uuid4().hex[:10]
    return {"stream": f"I_{tag}", "subjects": f"i{tag}.in"}


@pytest.mark.slow
async def test_publishing_survives_the_loss_of_one_node_of_three(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", nodes=3)
    cluster.start()
    try:
        log = await NatsPartitionLog.connect(
            cluster.urls, partitions=2, replicas=3, ack_wait_s=2.0, **_names()
        )
        try:
            for i in range(5):
                await log.publish(i % 2, i, b"before")
            cluster.kill(0)  # whichever node held the client or a leader: the others go on
            deadline = time.monotonic() + 20.0
            published = 5
            while published < 10:
                try:
                    await log.publish(published % 2, published, b"after")
                    published += 1
                except BrokerUnavailable:
                    if time.monotonic() > deadline:
                        pytest.fail("publishing did not resume on the two nodes left")
                    await asyncio.sleep(0.1)  # noqa: TID251 - retries a publish, with a deadline
            # Every message is in the stream; a node's loss may leave the answer to an info
            # request (the meta leader's) for a new election to give, so ask until a deadline.
            while True:
                try:
                    assert await log.lag(0) + await log.lag(1) == 10
                    break
                except BrokerUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)  # noqa: TID251 - retries a read, with a deadline
        finally:
            await log.close()
    finally:
        cluster.stop()


@pytest.mark.slow
async def test_a_stream_the_cluster_cannot_place_yet_is_asked_for_until_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes of three up (a stack started all at once): three replicas cannot be placed
    yet. A short wait is a clear BrokerUnavailable; a longer one ends when the third joins."""
    cluster = NatsCluster(tmp_path / "nats", nodes=3)
    cluster.start(up=2)
    urls = cluster.urls[:2]
    names = _names()
    try:
        with pytest.raises(BrokerUnavailable, match="placement"):
            await NatsPartitionLog.connect(
                urls, partitions=2, replicas=3, ready_timeout_s=1.0, **names
            )
        caplog.clear()
        connecting = asyncio.create_task(
            NatsPartitionLog.connect(urls, partitions=2, replicas=3, ready_timeout_s=60, **names)
        )
        deadline = time.monotonic() + 20.0
        while "cannot place stream" not in caplog.text:  # refused once, and asking again
            assert not connecting.done(), connecting.exception()
            assert time.monotonic() < deadline, "the refusal was never logged"
            await asyncio.sleep(0.05)  # noqa: TID251 - polls a condition, with a deadline
        cluster.start_node(2, wait=False)
        async with asyncio.timeout(30):
            log = await connecting
        try:
            await log.publish(1, 1, b"placed")
            assert await log.lag(1) == 1
        finally:
            await log.close()
    finally:
        cluster.stop()


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_dead_url_is_broker_unavailable_quickly_without_credentials() -> None:
    url = f"nats://butler:s3cret@127.0.0.1:{_dead_port()}"
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        await NatsPartitionLog.connect([url], partitions=2, connect_timeout_s=1.0)
    assert time.monotonic() - began < 5.0
    message = str(caught.value)
    assert "BUTLER_BROKER_URL" in message
    assert "s3cret" not in message


async def test_a_stream_made_for_another_partition_count_is_a_configuration_error(
    nats_cluster: NatsCluster,
) -> None:
    names = _names()
    first = await NatsPartitionLog.connect(nats_cluster.urls, partitions=4, **names)
    await first.close()
    again = await NatsPartitionLog.connect(nats_cluster.urls, partitions=4, **names)
    await again.close()
    with pytest.raises(ConfigurationError, match="BUTLER_BROKER_PARTITIONS=8") as caught:
        await NatsPartitionLog.connect(nats_cluster.urls, partitions=8, **names)
    assert "\n" not in str(caught.value)


@asynccontextmanager
async def _log_without_its_stream(
    cluster: NatsCluster, partition: int
) -> AsyncIterator[tuple[NatsPartitionLog, _Names]]:
    """A connected log whose stream was then deleted, once every node knows it: a request on
    the partition's subject is answered "no responders" at once instead of vanishing into a
    stream being torn down."""
    names = _names()
    log = await NatsPartitionLog.connect(cluster.urls, partitions=2, **names)
    admin = await nats.connect(cluster.urls)
    try:
        await admin.jetstream().delete_stream(names["stream"])
        deadline = time.monotonic() + 10.0
        while True:
            try:
                await admin.request(f"{names['subjects']}.{partition}", b"probe", timeout=0.5)
            except nats.errors.NoRespondersError:
                break
            except nats.errors.TimeoutError:
                pass
            assert time.monotonic() < deadline, "the deleted stream still takes publishes"
        yield log, names
    finally:
        await admin.close()
        await log.close()


async def test_a_publish_no_stream_took_is_sent_again_until_one_does(
    nats_cluster: NatsCluster,
) -> None:
    async with _log_without_its_stream(nats_cluster, 1) as (log, names):
        log.publish_timeout_s = 20.0
        publish = asyncio.create_task(log.publish(1, 7, b"kept"))
        deadline = time.monotonic() + 10.0
        while log.publishes_resent == 0:  # nobody answers for the subject: sent again
            assert not publish.done(), publish.exception()
            assert time.monotonic() < deadline, "the publish was never sent again"
            await asyncio.sleep(0.01)  # noqa: TID251 - polls a condition, with a deadline
        again = await NatsPartitionLog.connect(nats_cluster.urls, partitions=2, **names)
        await again.close()  # the stream is back (as a restarted front door makes it)
        async with asyncio.timeout(15):
            await publish
        assert await log.lag(1) == 1


async def test_a_publish_no_stream_ever_takes_is_broker_unavailable_by_its_timeout(
    nats_cluster: NatsCluster,
) -> None:
    async with _log_without_its_stream(nats_cluster, 0) as (log, _):
        log.publish_timeout_s = 1.0
        began = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="publish"):
            await log.publish(0, 8, b"refused")
        assert 0.9 < time.monotonic() - began < 5.0
        assert log.publishes_resent > 0
