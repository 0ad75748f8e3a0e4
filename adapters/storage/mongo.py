"""`MongoStore`: the `Store` port on MongoDB through PyMongo's native async client.

Collections and codec live in `mongo_schema`, connection options, migration and error mapping
in `mongo_setup`; this module owns the client, the queries and the transactions.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from bson.errors import BSONError
from pymongo import AsyncMongoClient, DeleteMany, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from adapters.storage.mongo_schema import (
    CACHE,
    DEFAULT_DATABASE,
    EVENTS,
    LEASES,
    PROFILES,
    USAGE,
    Doc,
    bson_date,
    decode_event,
    decode_lease,
    decode_profile,
    event_doc,
    from_micros,
    lease_doc_query,
    profile_doc,
    to_micros,
)
from adapters.storage.mongo_setup import (
    client_options,
    incarnation,
    map_error,
    migrate,
    supports_transactions,
)
from engine import leases as rules
from engine.budget import Usage, period_keys
from engine.domain import MemoryEvent, MemorySlice, TurnContext, UserProfile
from engine.errors import (
    DuplicateMessage,
    LeaseLost,
    OwnedElsewhere,
    StoreCorrupted,
    StoreUnavailable,
)
from engine.ports import Lease, Store

# PyMongo logs whole commands (message text included) at DEBUG; Butler's logs carry none.
logging.getLogger("pymongo.command").setLevel(logging.INFO)

T = TypeVar("T")
Session = AsyncClientSession | None

_TRANSACTION_TRIES = 3
_ACQUIRE_TRIES = 5
"""Rounds of acquire: each loses only to a writer that changed the key's document meanwhile."""
_MAJORITY = WriteConcern("majority", j=True)
_RENEW_CHUNK = 500
_DUPLICATE_KEY = 11000
_NO_PROJECTION = {"_id": 0}


class MongoStore:
    """Profiles in `user_profiles`, events in `user_memory` (see `mongo_schema`).

    Open with `await MongoStore.open(uri)` and `await store.close()`. Writes of more than one
    document run in one transaction when the server has transactions (replica set or sharded
    cluster); otherwise they run in the crash-safe order SQLite documents (a summary is saved
    before the events it covers are deleted). Errors surface as `StoreUnavailable`
    (unreachable, timed out, conflicts) or `StoreCorrupted` (refused or unreadable data).

    Leases are documents of `leases` keyed on `_id`, changed only by conditional single-document
    updates (a takeover `$inc`s the token), written and read with majority concern on a replica
    set, so a lease survives a failover. A fenced write, where the server has transactions,
    runs in one transaction that first updates the lease's document on its (key, owner, token):
    a concurrent takeover then conflicts with it, and whichever commits second retries and
    sees the other. Without transactions (a standalone server) the check is a read just before
    the write: a takeover in between (a lease that expired mid-write) is not caught there. That
    needs a holder that stopped renewing for a whole TTL yet still writes; run a replica set
    (one node is enough) for the full guarantee.
    """

    def __init__(
        self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], *, txn: bool, incarnation: str
    ) -> None:
        self._client = client
        self._db = db
        self._incarnation = incarnation
        self._lost: str | None = None
        self._profiles: AsyncCollection[Doc] = db[PROFILES]
        self._events: AsyncCollection[Doc] = db[EVENTS]
        self._cache: AsyncCollection[Doc] = db[CACHE]
        self._leases: AsyncCollection[Doc] = (
            db[LEASES].with_options(write_concern=_MAJORITY, read_concern=ReadConcern("majority"))
            if txn
            else db[LEASES]
        )
        self._usage: AsyncCollection[Doc] = db[USAGE]
        self.transactions = txn
        """Whether multi-document writes are atomic (the server supports transactions)."""
        self._closed = False
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._root = self
        """The store opened: a fenced view shares its client and its state."""
        self._fence: Lease | None = None
        """The lease a fenced view checks with each of its writes; None: not a view."""

    @classmethod
    async def open(cls, uri: str, *, retention_days: int = 90) -> MongoStore:
        """Connect, check the schema version and create the indexes (idempotently).

        Args:
            uri: a `mongodb://` or `mongodb+srv://` URI; the database is its path
                (`butler` when absent).
            retention_days: the TTL of events (`expireAfterSeconds` of the TTL index).

        Raises:
            StoreUnavailable: no server answered in time.
            StoreCorrupted: the URI is unusable or the database's schema is newer.
        """
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                uri, appname="butler", **client_options(uri)
            )
        except PyMongoError as exc:
            raise map_error(exc) from exc
        except (ValueError, TypeError) as exc:  # PyMongo's word for a bad option value
            raise StoreCorrupted(f"mongodb: the store's URI is not usable: {exc}") from exc
        try:
            db = client.get_default_database(DEFAULT_DATABASE)
            hello = await client.admin.command("hello")
            token = await migrate(db, retention_days=retention_days)
        except BaseException as exc:
            await client.close()
            if isinstance(exc, PyMongoError):
                raise map_error(exc) from exc
            raise
        return cls(client, db, txn=supports_transactions(hello), incarnation=token)

    def fenced(self, lease: Lease) -> Store:
        """A view whose writes each check `lease` with the write (see the class and the port)."""
        view = copy.copy(self._root)
        view._fence = lease
        return view

    async def check(self) -> None:
        """Raise StoreUnavailable (for good) once the database was dropped under the service.

        MongoDB makes a dropped database again on the next write, empty and without indexes:
        the schema document's incarnation tells that one from the database opened.
        """
        if self._root is not self:
            await self._root.check()
            return
        if self._lost is None:
            async with self._op():
                found = await incarnation(self._db)
            if found != self._incarnation:
                self._lost = f"mongodb: the database {self._db.name} was dropped under the service"
        if self._lost is not None:
            raise StoreUnavailable(self._lost)

    async def close(self) -> None:
        """Let operations in flight finish, then close the client; calling it again does
        nothing. A fenced view closes nothing."""
        if self._root is not self:
            return
        if not self._closed:
            self._closed = True
            await self._drained.wait()
            await self._client.close()
        await self._drained.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """One port operation: refused once closed, counted for `close`, errors mapped."""
        root = self._root
        if root._closed:
            raise StoreUnavailable("the store is closed")
        if root._lost is not None:
            raise StoreUnavailable(root._lost)
        root._inflight += 1
        root._drained.clear()
        try:
            yield
        except (PyMongoError, BSONError) as exc:
            raise map_error(exc) from exc
        except OverflowError as exc:  # an integer BSON cannot hold
            raise StoreCorrupted(f"mongodb: {exc}") from exc
        finally:
            root._inflight -= 1
            if not root._inflight:
                root._drained.set()

    async def _guarded(self, work: Callable[[Session], Awaitable[T]], *, documents: int) -> T:
        """A write of the port; in a fenced view, checked against the lease (see the class)."""
        fence = self._fence
        if fence is None:
            return await self._write(work, documents=documents)
        if not self.transactions:
            if await self._leases.find_one(lease_doc_query(fence), {"_id": 1}) is None:
                raise LeaseLost(fence.key)
            return await work(None)

        async def checked(session: Session) -> T:
            # A write, not a read: a takeover of the same document conflicts with it.
            touched = await self._leases.update_one(
                lease_doc_query(fence), {"$inc": {"fenced_writes": 1}}, session=session
            )
            if touched.matched_count == 0:
                raise LeaseLost(fence.key)
            return await work(session)

        return await self._write(checked, documents=documents, force=True)

    async def _write(
        self, work: Callable[[Session], Awaitable[T]], *, documents: int, force: bool = False
    ) -> T:
        """Run `work` in a transaction when it writes several documents (or `force`) and the
        server can."""
        if not self.transactions or (documents < 2 and not force):
            return await work(None)
        concern = _MAJORITY if force else None
        async with self._client.start_session() as session:
            for attempt in range(1, _TRANSACTION_TRIES + 1):
                try:
                    async with await session.start_transaction(write_concern=concern):
                        return await work(session)
                except PyMongoError as exc:
                    # A write conflict with a concurrent transaction: try again at once.
                    # A lost server is not retried here: the caller hears of it in seconds.
                    conflict = exc.has_error_label("TransientTransactionError") and not isinstance(
                        exc, ConnectionFailure
                    )
                    if not conflict or attempt == _TRANSACTION_TRIES:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- profiles ----------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> UserProfile | None:
        async with self._op():
            doc = await self._profiles.find_one({"user_id": user_id}, _NO_PROJECTION)
        return None if doc is None else decode_profile(doc)

    async def save_profile(self, profile: UserProfile) -> None:
        doc = profile_doc(profile)

        async def save(session: Session) -> None:
            await self._profiles.replace_one(
                {"user_id": profile.user_id}, doc, upsert=True, session=session
            )

        async with self._op():
            await self._guarded(save, documents=1)

    async def list_profiles(self, *, limit: int, after: str = "") -> list[UserProfile]:
        """Profiles ordered by user id, starting after `after`."""
        if limit <= 0:  # a limit of 0 means "no limit" to MongoDB
            async with self._op():
                return []
        async with self._op():
            cursor = self._profiles.find({"user_id": {"$gt": after}}, _NO_PROJECTION)
            docs = await cursor.sort("user_id", 1).limit(limit).to_list(None)
        return [decode_profile(doc) for doc in docs]

    async def erase_user(self, user_id: str) -> None:
        """Delete the user's profile, events, cached answers and token usage."""

        async def erase(session: Session) -> None:
            await self._usage.delete_many({"user_id": user_id}, session=session)
            await self._cache.delete_many({"user_id": user_id}, session=session)
            await self._events.delete_many({"user_id": user_id}, session=session)
            await self._profiles.delete_one({"user_id": user_id}, session=session)

        async with self._op():
            await self._guarded(erase, documents=4)

    # -- events ------------------------------------------------------------------------------

    async def append(
        self, events: Sequence[MemoryEvent], *, profile: UserProfile | None = None
    ) -> None:
        """Store `events` (replacing any with the same id) and create `profile` if absent."""
        docs = [event_doc(event) for event in events]  # checked before anything is written
        created = None if profile is None else profile_doc(profile)
        ops = [ReplaceOne({"user_id": d["user_id"], "id": d["id"]}, d, upsert=True) for d in docs]
        keyed = [d for d in docs if d["origin"] and d["role"] == "user"]

        async def write(session: Session) -> None:
            for doc in keyed:
                await self._refuse_repeat(doc, session)
            if ops:
                await self._events.bulk_write(ops, ordered=True, session=session)
            if created is not None:
                await self._create_profile(created, session)

        try:
            async with self._op():
                await self._guarded(write, documents=len(ops) + (created is not None))
        except StoreCorrupted as exc:
            if not keyed or not isinstance(exc.__cause__, DuplicateKeyError | BulkWriteError):
                raise
            async with self._op():  # a concurrent writer stored the same origin first
                for doc in keyed:
                    await self._refuse_repeat(doc, None)
            raise

    async def _refuse_repeat(self, doc: Doc, session: Session) -> None:
        """Raise DuplicateMessage if the message's origin is stored under another id."""
        found = await self._events.find_one(
            {"user_id": doc["user_id"], "origin": doc["origin"]},
            {"_id": 0, "id": 1},
            session=session,
        )
        if found is not None and found.get("id") != doc["id"]:
            raise DuplicateMessage(str(found.get("id")))

    async def owed_replies(self, user_id: str) -> list[MemoryEvent]:
        """Assistant events of the user not yet marked delivered, oldest first."""
        query = {"user_id": user_id, "role": "assistant", "delivered": None}
        async with self._op():
            docs = await self._events.find(query, _NO_PROJECTION).sort("id", 1).to_list(None)
        return [decode_event(doc) for doc in docs]

    async def mark_delivered(self, user_id: str, event_id: str, receipt: str) -> None:
        """Record the reply as handed over; a second mark keeps the first receipt."""
        query = {"user_id": user_id, "id": event_id, "role": "assistant", "delivered": None}
        async with self._op():  # a fact, even from a former holder: not fenced
            await self._events.update_one(query, {"$set": {"delivered": receipt}})

    async def _create_profile(self, doc: Doc, session: Session) -> None:
        try:
            await self._profiles.update_one(
                {"user_id": doc["user_id"]}, {"$setOnInsert": doc}, upsert=True, session=session
            )
        except DuplicateKeyError:
            if session is not None:
                raise
            # A concurrent upsert created it first: the profile exists, as asked.

    async def load_turn(self, user_id: str, *, limit: int, before: str) -> TurnContext:
        """The profile, the `limit` newest events of the conversation before message
        `before` (in `MemoryEvent.position` order), and the count."""
        async with self._op():
            profile, recent, count = await _together(
                self._profiles.find_one({"user_id": user_id}, _NO_PROJECTION),
                self._recent(user_id, limit, before),
                self._events.count_documents({"user_id": user_id}),
            )
        found = None if profile is None else decode_profile(profile)
        events = tuple(decode_event(doc) for doc in reversed(recent))
        summary = found.memory_summary if found else ""
        return TurnContext(found, MemorySlice(events, summary, count))

    async def _recent(self, user_id: str, limit: int, before: str) -> list[Doc]:
        """The conversation before message `before`, newest first, in
        `MemoryEvent.position` order: a reply right after the message it answers."""
        if limit <= 0:
            return []
        is_reply = {
            "$and": [{"$eq": ["$role", "assistant"]}, {"$gt": [{"$ifNull": ["$reply_to", ""]}, ""]}]
        }
        pipeline: list[Doc] = [
            {"$match": {"user_id": user_id}},
            {
                "$addFields": {
                    "_position": {"$cond": [is_reply, "$reply_to", "$id"]},
                    "_reply": {"$cond": [is_reply, 1, 0]},
                }
            },
            {"$match": {"_position": {"$lt": before}}},
            {"$sort": {"_position": -1, "_reply": -1, "id": -1}},
            {"$limit": limit},
            {"$project": {"_id": 0, "_position": 0, "_reply": 0}},
        ]
        cursor = await self._events.aggregate(pipeline)
        return await cursor.to_list(None)

    async def unanswered(self, user_id: str) -> list[MemoryEvent]:
        """User events no reply answers (theirs, or their batch's: a folded message names
        the message whose reply answers it), oldest first."""
        replies = self._events.find(
            {"user_id": user_id, "role": "assistant"}, {"_id": 0, "reply_to": 1}
        )
        asked = self._events.find({"user_id": user_id, "role": "user"}, _NO_PROJECTION)
        async with self._op():
            answered, pending = await _together(
                replies.to_list(None), asked.sort("id", 1).to_list(None)
            )
        replied = {doc.get("reply_to") for doc in answered} - {None, ""}
        return [
            decode_event(doc)
            for doc in pending
            if doc.get("id") not in replied and doc.get("reply_to") not in replied
        ]

    # -- compaction and retention ------------------------------------------------------------

    async def events_before(self, user_id: str, *, keep_last: int) -> list[MemoryEvent]:
        """Every event except the `keep_last` newest, oldest first."""
        async with self._op():
            cursor = self._events.find({"user_id": user_id}, _NO_PROJECTION).sort("id", -1)
            docs = await cursor.skip(max(keep_last, 0)).to_list(None)
        return [decode_event(doc) for doc in reversed(docs)]

    async def apply_summary(self, profile: UserProfile, event_ids: Sequence[str]) -> int:
        """Save `profile` first, then delete those of `event_ids` that are the user's: in one
        transaction where the server has them, else in this order (a crash in between leaves
        events the summary already covers, deleted by the next compression)."""
        doc = profile_doc(profile)
        ids = list(dict.fromkeys(event_ids))

        async def summarise(session: Session) -> int:
            await self._profiles.replace_one(
                {"user_id": profile.user_id}, doc, upsert=True, session=session
            )
            if not ids:
                return 0
            deleted = await self._events.delete_many(
                {"user_id": profile.user_id, "id": {"$in": ids}}, session=session
            )
            return deleted.deleted_count

        async with self._op():
            return await self._guarded(summarise, documents=1 + len(ids))

    async def purge_older_than(self, cutoff: datetime) -> int:
        """Delete events created before `cutoff` (the TTL index does the same on its own)."""
        micros = to_micros(cutoff)
        # The date (milliseconds) narrows by index; the exact microseconds decide.
        query = {"created_at": {"$lte": bson_date(micros)}, "created_us": {"$lt": micros}}
        async with self._op():
            deleted = await self._events.delete_many(query)
        return deleted.deleted_count

    # -- response cache ----------------------------------------------------------------------

    async def cached_answer(self, key: str, *, now: datetime) -> str | None:
        query = {"_id": key, "expires_us": {"$gt": to_micros(now)}}
        async with self._op():
            doc = await self._cache.find_one(query, {"answer": 1})
        return None if doc is None else str(doc["answer"])

    async def cache_answer(
        self, key: str, user_id: str, text: str, *, expires_at: datetime
    ) -> None:
        micros = to_micros(expires_at)
        doc = {
            "user_id": user_id,
            "answer": text,
            "expires": bson_date(micros),
            "expires_us": micros,
        }

        async def put(session: Session) -> None:
            await self._cache.replace_one({"_id": key}, doc, upsert=True, session=session)

        async with self._op():
            await self._guarded(put, documents=1)

    async def purge_cache(self, now: datetime) -> int:
        """Delete expired answers now (the TTL index does it too, about once a minute)."""
        async with self._op():
            deleted = await self._cache.delete_many({"expires_us": {"$lte": to_micros(now)}})
        return deleted.deleted_count

    async def users_over(self, threshold: int, *, limit: int) -> list[tuple[str, int]]:
        """Users holding more than `threshold` events, with their counts."""
        if limit <= 0:
            async with self._op():
                return []
        pipeline: list[Doc] = [
            {"$group": {"_id": "$user_id", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": threshold}}},
            {"$sort": {"n": -1, "_id": 1}},
            {"$limit": limit},
        ]
        async with self._op():
            cursor = await self._events.aggregate(pipeline)
            docs = await cursor.to_list(None)
        return [(doc["_id"], doc["n"]) for doc in docs]

    # -- leases ------------------------------------------------------------------------------

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
        """Take `key` if free or expired (token + 1), or renew it for its holder: conditional
        single-document updates, so of racing acquirers exactly one matches.

        Raises:
            OwnedElsewhere: another owner holds `key` unexpired.
        """
        rules.taken(None, key, owner, ttl_s=ttl_s, now=now)  # refuses bad arguments first
        moment, until = to_micros(now), to_micros(rules.expiry(now, ttl_s))
        after = ReturnDocument.AFTER
        async with self._op():
            for _ in range(_ACQUIRE_TRIES):
                mine = await self._leases.find_one_and_update(
                    {"_id": key, "owner": owner, "expires_us": {"$gt": moment}},
                    {"$set": {"expires_us": until}},
                    return_document=after,
                )
                if mine is not None:
                    return decode_lease(mine)
                free = {"_id": key, "$or": [{"owner": ""}, {"expires_us": {"$lte": moment}}]}
                change = {
                    "$set": {"owner": owner, "expires_us": until},
                    "$inc": {"token": 1},
                    "$setOnInsert": {"nudges": 0},
                }
                try:
                    # The document before the change: who held it, for `taken_from`.
                    before = await self._leases.find_one_and_update(
                        free, change, upsert=True, return_document=ReturnDocument.BEFORE
                    )
                except DuplicateKeyError:
                    pass  # held: the upsert's insert met the key's document
                else:
                    if before is None:  # inserted: the key's first holder
                        return Lease(key, owner, 1, from_micros(until))
                    return rules.taken(decode_lease(before), key, owner, ttl_s=ttl_s, now=now)
                held = await self._leases.find_one({"_id": key})
                if held is not None:
                    current = decode_lease(held)
                    if rules.is_live(current, now) and current.owner != owner:
                        raise OwnedElsewhere(
                            key,
                            owner=current.owner,
                            expires_at=current.expires_at,
                            token=current.token,
                        )
            raise StoreUnavailable(f"mongodb: the lease on {key} kept changing under acquire")

    async def renew_lease(self, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
        """Extend `lease`. Raises: LeaseLost when its key has another holder or token."""
        until = to_micros(rules.expiry(now, ttl_s))
        async with self._op():
            doc = await self._leases.find_one_and_update(
                lease_doc_query(lease),
                {"$set": {"expires_us": until}},
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            raise LeaseLost(lease.key)
        return decode_lease(doc)

    async def renew_leases(
        self, leases: Sequence[Lease], *, ttl_s: float, now: datetime
    ) -> list[Lease | None]:
        """Each of `leases` renewed, or None where it was lost: per owner and chunk, one bulk
        write of single-key updates (by `_id` and owner), then one read of what each key holds.

        A key its owner took again meanwhile (a newer token) is extended too, harmlessly (the
        owner holds it); the older lease is reported lost by the token the read finds."""
        until = to_micros(rules.expiry(now, ttl_s))
        found: dict[str, Lease] = {}
        by_owner: dict[str, list[str]] = {}
        for lease in leases:
            by_owner.setdefault(lease.owner, []).append(lease.key)
        async with self._op():
            for owner, keys in by_owner.items():
                for start in range(0, len(keys), _RENEW_CHUNK):
                    chunk = keys[start : start + _RENEW_CHUNK]
                    # One ordered=False bulk of single-document updates, not an update_many:
                    # the same one round trip, and each update touches only its own key, so it
                    # never waits on a turn's transaction that holds another key (the Python
                    # test server livelocked a multi-document update against one).
                    await self._leases.bulk_write(
                        [
                            UpdateOne({"_id": key, "owner": owner}, {"$set": {"expires_us": until}})
                            for key in chunk
                        ],
                        ordered=False,
                    )
                    docs = await self._leases.find({"_id": {"$in": chunk}}).to_list(None)
                    found.update((str(doc["_id"]), decode_lease(doc)) for doc in docs)
        # Only this holder changes its own claim, so a claim still found was renewed above.
        held = [found.get(lease.key) for lease in leases]
        return [
            now_held if now_held is not None and now_held.same_claim(lease) else None
            for lease, now_held in zip(leases, held, strict=True)
        ]

    async def release_lease(self, lease: Lease) -> None:
        """Free the key if `lease` still holds it."""
        freed = {"owner": rules.FREE, "expires_us": to_micros(rules.RELEASED_AT)}
        async with self._op():
            await self._leases.update_one(lease_doc_query(lease), {"$set": freed})

    async def leases(self, prefix: str, *, now: datetime) -> list[Lease]:
        """Unexpired leases whose key starts with `prefix`, ordered by key."""
        query = {
            "_id": {"$gte": prefix, "$lt": prefix + "\U0010ffff"},
            "owner": {"$ne": rules.FREE},
            "expires_us": {"$gt": to_micros(now)},
        }
        async with self._op():
            docs = await self._leases.find(query).sort("_id", 1).to_list(None)
        return [decode_lease(doc) for doc in docs]

    async def nudge_lease(self, key: str, *, now: datetime) -> Lease | None:
        """Count a nudge on the live lease of `key`; None when nobody holds it."""
        query = {"_id": key, "owner": {"$ne": rules.FREE}, "expires_us": {"$gt": to_micros(now)}}
        async with self._op():
            doc = await self._leases.find_one_and_update(
                query, {"$inc": {"nudges": 1}}, return_document=ReturnDocument.AFTER
            )
        return None if doc is None else decode_lease(doc)

    # -- token usage -------------------------------------------------------------------------

    async def add_usage(self, user_id: str, tokens: int, *, now: datetime) -> None:
        """`$inc` the user's day and month of `now` (each upsert atomic: concurrent adds all
        count); documents of earlier periods are deleted.

        Raises:
            ValueError: `tokens` is negative.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be 0 or more, got {tokens}")
        keys = list(period_keys(now))
        inc = {"$inc": {"tokens": tokens}}
        ops: list[DeleteMany | UpdateOne] = [
            DeleteMany({"user_id": user_id, "period": {"$nin": keys}}),
            *(UpdateOne({"user_id": user_id, "period": key}, inc, upsert=True) for key in keys),
        ]
        async with self._op():
            try:
                await self._usage.bulk_write(ops, ordered=True)  # one round trip per turn
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or errors[0].get("code") != _DUPLICATE_KEY:
                    raise
                # Two upserts raced to insert one period: it exists now, and this upsert finds
                # it. Ordered writes stop at the first error: the ones from it on run again.
                for key in keys[int(errors[0]["index"]) - 1 :]:
                    query = {"user_id": user_id, "period": key}
                    await self._usage.update_one(query, inc, upsert=True)

    async def usage(self, user_id: str, *, now: datetime) -> Usage:
        day, month = period_keys(now)
        query = {"user_id": user_id, "period": {"$in": [day, month]}}
        async with self._op():
            docs = await self._usage.find(query, {"_id": 0, "period": 1, "tokens": 1}).to_list(None)
        found = {str(doc["period"]): int(doc["tokens"]) for doc in docs}
        return Usage(day=found.get(day, 0), month=found.get(month, 0))

    async def reset_usage(self, user_id: str) -> None:
        async with self._op():
            await self._usage.delete_many({"user_id": user_id})

    # -- dump (adapters.storage.dump) --------------------------------------------------------

    async def events_page(self, *, after: tuple[str, str], limit: int) -> list[MemoryEvent]:
        """Events ordered by (user id, id), starting after the key `after`."""
        user_id, event_id = after
        query = {
            "$or": [{"user_id": {"$gt": user_id}}, {"user_id": user_id, "id": {"$gt": event_id}}]
        }
        async with self._op():
            cursor = self._events.find(query, _NO_PROJECTION).sort([("user_id", 1), ("id", 1)])
            docs = await cursor.limit(max(limit, 1)).to_list(None)
        return [decode_event(doc) for doc in docs]


async def _together(*calls: Awaitable[Any]) -> list[Any]:
    """Await `calls` concurrently; raise the first error only after all have finished."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
