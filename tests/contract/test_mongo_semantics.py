"""The server behaviour the MongoDB adapter relies on, asserted with the server's own error
codes on every MongoDB-protocol server the suite has: secantusdb always (a single-node replica
set, and a standalone), a real mongod too when BUTLER_TEST_MONGODB_URI names one. A server that
differs from mongod here fails loudly, instead of letting the adapter's tests pass on it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from adapters.storage.mongo import MongoStore
from adapters.storage.mongo_schema import CACHE, EVENTS, PROFILES, TTL_INDEX
from adapters.storage.mongo_setup import DEFAULT_OPTIONS, supports_transactions
from tests.contract.conftest import REAL_MONGODB
from tests.support.secantus import SecantusServer

pytestmark = pytest.mark.anyio

Doc = dict[str, Any]
DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
WRITE_CONFLICT = 112
TRANSIENT = "TransientTransactionError"

SERVERS = ["secantusdb", *(["mongodb"] if REAL_MONGODB else [])]


@pytest.fixture(params=SERVERS)
def server_uri(request: pytest.FixtureRequest) -> str:
    """A server URI with a fresh database name as its path."""
    database = f"semantics_{uuid.uuid4().hex[:12]}"
    if request.param == "secantusdb":
        server: SecantusServer = request.getfixturevalue("secantus")
        return server.uri(database)
    return urlunsplit(urlsplit(REAL_MONGODB)._replace(path=f"/{database}"))


@pytest.fixture
def raw(server_uri: str) -> Iterator[Any]:
    client: MongoClient[Doc] = MongoClient(
        server_uri, serverSelectionTimeoutMS=5000, serverMonitoringMode="poll"
    )
    db = client.get_default_database()
    try:
        yield db
    finally:
        client.drop_database(db.name)
        client.close()


async def _migrated(uri: str, retention_days: int = 90) -> None:
    async with await MongoStore.open(uri, retention_days=retention_days):
        pass


async def test_unique_indexes_refuse_a_duplicate_with_code_11000(server_uri: str, raw: Any):
    await _migrated(server_uri)
    raw[EVENTS].insert_one({"user_id": "u", "id": "e1"})
    with pytest.raises(DuplicateKeyError) as caught:
        raw[EVENTS].insert_one({"user_id": "u", "id": "e1"})
    assert caught.value.code == DUPLICATE_KEY
    raw[EVENTS].insert_one({"user_id": "v", "id": "e1"})  # unique per user, not overall
    raw[PROFILES].insert_one({"user_id": "u"})
    with pytest.raises(DuplicateKeyError) as caught:
        raw[PROFILES].insert_one({"user_id": "u"})
    assert caught.value.code == DUPLICATE_KEY
    # The adapter creates profiles by upsert: a second one matches instead of failing.
    again = raw[PROFILES].update_one(
        {"user_id": "u"}, {"$setOnInsert": {"user_id": "u", "x": 1}}, upsert=True
    )
    assert (again.matched_count, again.upserted_id) == (1, None)
    assert raw[PROFILES].find_one({"user_id": "u"}, {"_id": 0}) == {"user_id": "u"}


async def test_ttl_indexes_carry_their_expiry_and_collmod_retunes_it(server_uri: str, raw: Any):
    await _migrated(server_uri, retention_days=30)
    events = {i["name"]: i for i in raw[EVENTS].list_indexes()}
    assert events[TTL_INDEX]["expireAfterSeconds"] == 30 * 86_400
    assert dict(events[TTL_INDEX]["key"]) == {"created_at": 1}
    cache = {i["name"]: i for i in raw[CACHE].list_indexes()}
    assert cache["llm_cache_ttl"]["expireAfterSeconds"] == 0
    await _migrated(server_uri, retention_days=7)  # the adapter retunes with collMod
    events = {i["name"]: i for i in raw[EVENTS].list_indexes()}
    assert events[TTL_INDEX]["expireAfterSeconds"] == 7 * 86_400
    with pytest.raises(OperationFailure) as caught:  # the adapter's collMod names the index
        raw.command("collMod", EVENTS, index={"name": "no_such_index", "expireAfterSeconds": 1})
    assert caught.value.code == INDEX_NOT_FOUND


def test_a_transaction_that_fails_leaves_nothing(raw: Any):
    hello = raw.client.admin.command("hello")
    assert supports_transactions(hello), "the adapter would write without transactions here"
    raw[PROFILES].create_index("user_id", unique=True)
    raw[PROFILES].insert_one({"user_id": "taken"})
    with raw.client.start_session() as session:
        caught = _in_transaction(
            session,
            lambda: raw[EVENTS].insert_one({"user_id": "u", "id": "in-txn"}, session=session),
            lambda: raw[PROFILES].insert_one({"user_id": "taken"}, session=session),
        )
    assert isinstance(caught, DuplicateKeyError)
    assert caught.code == DUPLICATE_KEY
    assert not caught.has_error_label(TRANSIENT)  # not a conflict: the adapter does not retry
    assert raw[EVENTS].count_documents({"id": "in-txn"}) == 0  # the insert before was undone

    def fail() -> None:
        raise RuntimeError("the work failed")

    with raw.client.start_session() as session:  # an exception in our code aborts as well
        caught = _in_transaction(
            session,
            lambda: raw[EVENTS].insert_one({"user_id": "u", "id": "aborted"}, session=session),
            fail,
        )
    assert isinstance(caught, RuntimeError)
    assert raw[EVENTS].count_documents({"id": "aborted"}) == 0


def _in_transaction(session: Any, *steps: Callable[[], object]) -> Exception | None:
    """Run `steps` in one transaction of `session`; the exception that ended it, if any."""
    try:
        with session.start_transaction():
            for step in steps:
                step()
    except Exception as exc:  # returned for the test to assert on
        return exc
    return None


def test_concurrent_transactions_conflict_with_a_transient_label(raw: Any):
    raw[EVENTS].insert_one({"_id": "doc", "n": 0})
    client = raw.client
    with client.start_session() as first, client.start_session() as second:
        first.start_transaction()
        raw[EVENTS].update_one({"_id": "doc"}, {"$inc": {"n": 1}}, session=first)
        second.start_transaction()
        with pytest.raises(OperationFailure) as caught:
            raw[EVENTS].update_one({"_id": "doc"}, {"$inc": {"n": 10}}, session=second)
        assert caught.value.code == WRITE_CONFLICT
        assert caught.value.has_error_label(TRANSIENT)  # the adapter retries on this label
        second.abort_transaction()
        first.commit_transaction()
    assert raw[EVENTS].find_one({"_id": "doc"})["n"] == 1


KILLED_MID_TRANSACTION = """
import sys, time
from pymongo import MongoClient
client = MongoClient(sys.argv[1])
session = client.start_session()
session.start_transaction()
client.get_default_database().leases.update_one(
    {"_id": "user:1"}, {"$inc": {"token": 1}}, session=session
)
print("in transaction", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_clients_transaction_is_aborted_within_its_lifetime(server_uri: str, raw: Any):
    """A worker SIGKILLed inside a fenced write leaves its transaction open on the server. A
    write to the lease it updated (the take-over) waits for the transaction's lifetime (60 s,
    mongod's `transactionLifetimeLimitSeconds`), then finds the lease as it was."""
    raw.leases.insert_one({"_id": "user:1", "token": 1})
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_TRANSACTION, server_uri], stdout=subprocess.PIPE
    ) as victim:
        try:
            assert victim.stdout is not None
            assert victim.stdout.readline() == b"in transaction\n"
        finally:
            victim.kill()
    began = time.monotonic()
    taker: MongoClient[Doc] = MongoClient(server_uri, socketTimeoutMS=120_000)
    try:
        before = taker.get_default_database().leases.find_one_and_update(
            {"_id": "user:1"}, {"$inc": {"token": 10}}
        )
    finally:
        taker.close()
    assert before == {"_id": "user:1", "token": 1}  # the dead transaction's write is gone
    assert time.monotonic() - began < 90


def test_journaled_writes_are_acknowledged(raw: Any):
    assert DEFAULT_OPTIONS["journal"] is True  # what the adapter asks of every write
    journaled = raw[EVENTS].with_options(write_concern=WriteConcern(j=True))
    assert journaled.insert_one({"user_id": "u", "id": "j"}).acknowledged


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    server = SecantusServer(Path(tmp_path_factory.mktemp("standalone")), standalone=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_standalone_says_so_and_the_adapter_does_without_transactions(
    standalone: SecantusServer,
):
    # mongod refuses a transaction on a standalone (IllegalOperation, code 20); secantusdb's
    # standalone mode runs it. The adapter never asks: it reads `hello`, asserted here.
    uri = standalone.uri(f"semantics_{uuid.uuid4().hex[:12]}")
    client: MongoClient[Doc] = MongoClient(uri, serverMonitoringMode="poll")
    with client:
        hello = client.admin.command("hello")
        assert "setName" not in hello
        assert not supports_transactions(hello)
    async with await MongoStore.open(uri) as store:
        assert not store.transactions  # the fallback: ordered writes, summary first
