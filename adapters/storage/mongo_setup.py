"""Connecting to MongoDB: client options, what a server supports, the idempotent schema
migration, and the mapping of PyMongo's errors onto `engine.errors`.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bson.errors import BSONError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from adapters.storage.mongo_schema import (
    CACHE,
    CACHE_INDEXES,
    EVENT_INDEXES,
    EVENTS,
    META,
    PROFILE_INDEXES,
    PROFILES,
    SCHEMA_VERSION,
    TTL_INDEX,
    USAGE,
    USAGE_INDEXES,
    Doc,
)
from engine.errors import ButlerError, StoreCorrupted, StoreUnavailable

DEFAULT_OPTIONS = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 15000,
    "journal": True,
    "serverMonitoringMode": "poll",
}
"""Applied unless the URI sets them. A dead server must fail a turn in seconds (the actor then
apologises and retries), not after PyMongo's 30 s default. A write is acknowledged once it is in
the journal: with MongoDB's default (j: false) a killed server loses up to ~100 ms of
acknowledged writes, and an acknowledged message must never be lost. Polling monitoring: the
streaming mode's extra monitor connections, when a client closes while one is still
connecting, leak a socket (PyMongo 4.20); a failed operation still triggers a check at once."""

# Server error codes that a later try may not meet: shutdown, step-down, lock and write
# conflicts, timeouts, and refused credentials (fixed by the operator without losing a message).
_TRANSIENT_CODES = frozenset(
    {6, 7, 13, 18, 24, 46, 50, 89, 91, 112, 189, 251, 262, 9001, 10107, 11600, 11602, 13435}
)


def map_error(exc: Exception) -> ButlerError:
    """The `engine.errors` error for a PyMongo or BSON exception."""
    if isinstance(exc, ConfigurationError):
        return StoreCorrupted(f"mongodb: the store's URI is not usable: {exc}")
    transient = isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError) or (
        isinstance(exc, PyMongoError)
        and (
            exc.has_error_label("TransientTransactionError")
            or exc.has_error_label("RetryableWriteError")
        )
    )
    if isinstance(exc, OperationFailure):
        transient = transient or exc.code in _TRANSIENT_CODES
    elif isinstance(exc, PyMongoError) and not isinstance(exc, BSONError):
        transient = True  # client-side states: closed client, lost session, protocol
    if transient:
        return StoreUnavailable(f"mongodb: {type(exc).__name__}: {exc}")
    return StoreCorrupted(f"mongodb: {type(exc).__name__}: {exc}")


def client_options(uri: str) -> dict[str, Any]:
    """`DEFAULT_OPTIONS` less those the URI sets itself (URI option names ignore case)."""
    given = {key.lower() for key, _ in parse_qsl(urlsplit(uri).query)}
    return {k: v for k, v in DEFAULT_OPTIONS.items() if k.lower() not in given}


def supports_transactions(hello: Doc) -> bool:
    """Whether a server's `hello` reply says it runs transactions (replica set or mongos)."""
    clustered = "setName" in hello or hello.get("msg") == "isdbgrid"
    return clustered and "logicalSessionTimeoutMinutes" in hello


async def migrate(db: AsyncDatabase[Doc], *, retention_days: int) -> str:
    """Bring `db` to `SCHEMA_VERSION`: every index, and the TTL set to `retention_days`.

    Idempotent; safe to run while other processes use the database.

    Returns:
        The database's incarnation: a token written once into its schema document, gone
        (or another) when the database was dropped and made again.

    Raises:
        StoreCorrupted: the database's schema is newer than this code.
        PyMongoError: the server failed (the caller maps it).
    """
    meta = await db[META].find_one({"_id": "schema"})
    version = 0 if meta is None else int(meta.get("version", 0))
    if version > SCHEMA_VERSION:
        raise StoreCorrupted(f"schema version {version} is newer than {SCHEMA_VERSION}")
    if 0 < version < 3:
        await db[EVENTS].update_many(
            {"role": "assistant", "delivered": {"$exists": False}},
            {"$set": {"delivered": "before-outbox"}},
        )
    every = (
        (PROFILES, PROFILE_INDEXES),
        (EVENTS, EVENT_INDEXES),
        (CACHE, CACHE_INDEXES),
        (USAGE, USAGE_INDEXES),
    )
    for collection, indexes in every:
        for name, (keys, options) in indexes.items():
            await db[collection].create_index(keys, name=name, **options)
    await _ensure_ttl(db, retention_days * 86_400)
    await db[META].update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True)
    # Two steps, each atomic on one document: databases made before the token get one too.
    token = uuid.uuid4().hex
    await db[META].update_one(
        {"_id": "schema", "incarnation": {"$exists": False}}, {"$set": {"incarnation": token}}
    )
    meta = await db[META].find_one({"_id": "schema"})
    return str(meta["incarnation"]) if meta is not None else token


async def incarnation(db: AsyncDatabase[Doc]) -> str | None:
    """The incarnation `migrate` returned, or None when the schema document is gone."""
    meta = await db[META].find_one({"_id": "schema"}, {"incarnation": 1})
    return None if meta is None else str(meta.get("incarnation"))


async def _ensure_ttl(db: AsyncDatabase[Doc], seconds: int) -> None:
    existing = None
    cursor = await db[EVENTS].list_indexes()
    async for index in cursor:
        if index["name"] == TTL_INDEX:
            existing = index.get("expireAfterSeconds")
    if existing is None:
        await db[EVENTS].create_index(
            [("created_at", 1)], name=TTL_INDEX, expireAfterSeconds=seconds
        )
    elif existing != seconds:
        index = {"name": TTL_INDEX, "expireAfterSeconds": seconds}
        await db.command("collMod", EVENTS, index=index)
