"""`butler admin list|show|history|reset|update|usage`: through the running service's admin
API, or on the store directly when no service answers (said on stderr), so live actors stay
coherent. On the store, a write claims the user first, as an actor would: a user another
process serves (a `butler chat`) is refused with exit code 3 and nothing is changed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from actors.ownership import StoreUserLeases, process_owner_id
from adapters.admin.client import AdminClient, AdminRequestFailed, NotButler, ServiceUnreachable
from adapters.admin.conversation import conversation, history_json
from adapters.admin.views import profile_json, usage_json
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_store, store_name
from engine.domain import InvalidProfileError
from engine.errors import OwnedElsewhere
from engine.messages import UpdateProfile
from engine.ports import Store

EXIT_OWNED_ELSEWHERE = 3
"""Another Butler process serves the user: change it through that process, or after it."""

CONFLICT = 409
"""The admin API's answer for a user another process serves."""


async def main(settings: Settings, args: argparse.Namespace) -> int:
    return await run_admin(settings, args, sys.stdout)


async def run_admin(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Run one admin verb; 0 on success, 1 on a refused or failed request."""
    verb: str = args.admin_command
    try:
        body = _update_body(args) if verb == "update" else None
    except InvalidProfileError as exc:
        print(f"butler: {exc}", file=sys.stderr)
        return 2
    try:
        async with AdminClient(settings.admin_url, settings.admin_token) as client:
            return await _online(client, verb, args, body, out)
    except NotButler as exc:
        print(f"butler: {exc} (BUTLER_ADMIN_URL); using the store directly", file=sys.stderr)
    except ServiceUnreachable:
        print(
            f"butler: no service answers at {settings.admin_url}; using the store directly",
            file=sys.stderr,
        )
    except AdminRequestFailed as exc:
        print(f"butler: {exc}", file=sys.stderr)
        return EXIT_OWNED_ELSEWHERE if exc.status == CONFLICT else 1
    offline: dict[str, Callable[[], Awaitable[int]]] = {
        "show": lambda: show_from_store(settings, args.user, as_json=args.json, out=out),
        "list": lambda: list_from_store(settings, out=out),
        "history": lambda: history_from_store(
            settings, args.user, limit=args.limit, as_json=args.json, out=out
        ),
        "reset": lambda: reset_in_store(settings, args.user, erase=args.erase, out=out),
        "update": lambda: update_in_store(settings, args.user, body or {}, out=out),
        "usage": lambda: usage_in_store(
            settings, args.user, reset=args.reset, as_json=args.json, out=out
        ),
    }
    return await offline[verb]()


def _update_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        k: getattr(args, k) for k in ("persona", "tone", "language") if getattr(args, k)
    }
    if args.topics is not None:
        body["topics"] = [t.strip() for t in args.topics.split(",") if t.strip()]
    update_from(body)  # validates before anything is sent or written
    return body


def update_from(body: dict[str, Any]) -> UpdateProfile:
    """The `UpdateProfile` command a JSON body asks for.

    Raises:
        InvalidProfileError: a field is outside its allowed values, or nothing is changed.
    """
    topics = body.get("topics")
    return UpdateProfile(
        persona=body.get("persona"),
        tone=body.get("tone"),
        language=body.get("language"),
        topics=None if topics is None else tuple(topics),
    )


async def _online(
    client: AdminClient, verb: str, args: argparse.Namespace, body: Any, out: TextIO
) -> int:
    if verb == "list":
        after = ""
        while True:
            page = await client.call("GET", f"/admin/profiles?after={after}")
            for p in page["profiles"]:
                _print_row(p, out)
            if page["next_after"] is None:
                return 0
            after = page["next_after"]
    if verb == "show":
        _print_show(await client.call("GET", f"/admin/actors/{args.user}"), args.json, out)
    elif verb == "history":
        path = f"/admin/actors/{quote(args.user, safe='')}/history"
        data = await client.call("GET", path, params={"limit": str(max(args.limit, 0))})
        print_history(data, args.json, out)
    elif verb == "usage":
        path = f"/admin/actors/{quote(args.user, safe='')}/usage"
        if args.reset:
            data = await client.call("POST", path + "/reset")
        else:
            data = await client.call("GET", path)
        print_usage(data, args.json, out)
    elif verb == "reset":
        data = await client.call("POST", f"/admin/actors/{args.user}/reset", {"erase": args.erase})
        print(json.dumps(data, ensure_ascii=False), file=out)
    else:
        data = await client.call("PATCH", f"/admin/profiles/{args.user}", body)
        print(json.dumps(data["profile"], ensure_ascii=False), file=out)
    return 0


def _print_row(p: dict[str, Any], out: TextIO) -> None:
    state = p.get("state", "passive")
    summary = len(p["memory_summary"])
    print(f"{p['user_id']}\t{p['language']}\t{p['tone']}\t{summary}\t{state}", file=out)


def _print_show(data: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False), file=out)
        return
    for key, value in (data.get("profile") or {}).items():
        print(f"{key:>20}: {value}", file=out)
    for key in ("state", "memory_events", "summary_age_s", "mailbox_depth", "transitions"):
        if key in data:
            print(f"{key:>20}: {data[key]}", file=out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


async def show_from_store(settings: Settings, user_id: str, *, as_json: bool, out: TextIO) -> int:
    """Print a user's profile and memory size straight from the store."""
    store = await open_store(settings)
    try:
        profile = await store.get_profile(user_id)
        context = await store.load_turn(user_id, limit=0, before="\uffff")
    finally:
        await store.close()
    if profile is None:
        print(f"butler: no user {user_id!r} in {store_name(settings)}", file=sys.stderr)
        return 1
    data: dict[str, Any] = {
        "user_id": user_id,
        "state": "idle",  # no service holds this actor: it activates idle
        "memory_events": context.memory.total_events,
        "profile": {k: _jsonable(v) for k, v in asdict(profile).items()},
    }
    _print_show(data, as_json, out)
    return 0


async def list_from_store(settings: Settings, *, out: TextIO) -> int:
    """Print every profile: user id, language, tone, summary length, state."""
    store = await open_store(settings)
    try:
        after = ""
        while True:
            page = await store.list_profiles(limit=500, after=after)
            for p in page:
                _print_row({**profile_json(p), "state": "passive"}, out)
            if len(page) < 500:
                return 0
            after = page[-1].user_id
    finally:
        await store.close()


@asynccontextmanager
async def claimed(settings: Settings, store: Store, user_id: str) -> AsyncIterator[Store]:
    """`store` fenced by a claim of this command on the user, released after.

    Raises:
        OwnedElsewhere: another process serves the user.
    """
    ownership = StoreUserLeases(
        store, SystemClock(), owner=process_owner_id(), ttl_s=settings.lease_ttl_s
    )
    lease = await ownership.claim(user_id)
    try:
        yield store.fenced(lease)
    finally:
        await ownership.release(lease)


def _served_elsewhere(exc: OwnedElsewhere, user_id: str, settings: Settings) -> int:
    print(
        f"butler: another Butler process ({exc.owner}) serves user {user_id!r} on "
        f"{store_name(settings)}; change it through that process, or after it ends",
        file=sys.stderr,
    )
    return EXIT_OWNED_ELSEWHERE


async def reset_in_store(settings: Settings, user_id: str, *, erase: bool, out: TextIO) -> int:
    """No actor is live without the service: only `--erase` has something to do."""
    store = await open_store(settings)
    try:
        if await store.get_profile(user_id) is None:
            print(f"butler: no user {user_id!r} in {store_name(settings)}", file=sys.stderr)
            return 1
        if erase:
            async with claimed(settings, store, user_id) as fenced:
                await fenced.erase_user(user_id)
    except OwnedElsewhere as exc:
        return _served_elsewhere(exc, user_id, settings)
    finally:
        await store.close()
    print(json.dumps({"reset": True, "erased": erase, "state": "passive"}), file=out)
    return 0


async def update_in_store(
    settings: Settings, user_id: str, body: dict[str, Any], *, out: TextIO
) -> int:
    """Apply a profile update to the stored profile."""
    update = update_from(body)
    store = await open_store(settings)
    try:
        profile = await store.get_profile(user_id)
        if profile is None:
            print(f"butler: no user {user_id!r} in {store_name(settings)}", file=sys.stderr)
            return 1
        profile = update.apply(profile, datetime.now().astimezone())
        async with claimed(settings, store, user_id) as fenced:
            await fenced.save_profile(profile)
    except OwnedElsewhere as exc:
        return _served_elsewhere(exc, user_id, settings)
    finally:
        await store.close()
    print(json.dumps(profile_json(profile), ensure_ascii=False), file=out)
    return 0


def print_history(data: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """The conversation as a person reads it: who said what, then the lifecycle."""
    if as_json:
        print(json.dumps(data, ensure_ascii=False), file=out)
        return
    profile = data.get("profile") or {}
    print(
        f"{data['user_id']}: {profile.get('language', '?')}, {profile.get('tone', '?')},"
        f" {data.get('state', 'passive')}; {data['memory_events']} events stored"
        " (personal data masked)",
        file=out,
    )
    if data.get("summary"):
        print(f"summary: {data['summary']}", file=out)
    for event in data["events"]:
        who = "user" if event["role"] == "user" else "butler"
        text = " ".join(event["text"].split())
        print(f"{event['at']}  {who:<6}  {text}", file=out)
    timeline = data.get("transitions")
    if timeline is None:
        print("(no service holds this actor: no transitions to show)", file=out)
        return
    for t in timeline:
        trace = t.get("trace_url") or t.get("trace_id") or ""
        print(
            f"{t['at']}  {t['from']} -> {t['to']} ({t['trigger']})"
            f"  {t['duration_s']:.3f}s{'+' if t['ongoing'] else ''}  {trace}".rstrip(),
            file=out,
        )


async def history_from_store(
    settings: Settings, user_id: str, *, limit: int, as_json: bool, out: TextIO
) -> int:
    """The stored conversation; transitions live only in a running service."""
    store = await open_store(settings)
    try:
        profile, events, total = await conversation(store, user_id, limit=max(limit, 0))
    finally:
        await store.close()
    if profile is None and not events:
        print(f"butler: no user {user_id!r} in {store_name(settings)}", file=sys.stderr)
        return 1
    data = history_json(user_id, profile, events, total, None)
    print_history({**data, "state": "passive"}, as_json, out)
    return 0


def print_usage(data: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """Tokens per period against the limits, the level and when it lifts."""
    if as_json:
        print(json.dumps(data, ensure_ascii=False), file=out)
        return
    if data.get("reset"):
        print(f"{data['user_id']}: usage reset", file=out)
    for name in ("day", "month"):
        p = data[name]
        limit = "no limit" if p["limit"] is None else f"of {p['limit']} ({p['percent']}%)"
        print(f"{name:>6}: {p['tokens']} tokens {limit}, renews {p['renews_at']}", file=out)
    level = data["level"]
    until = f" until {data['renews_at']} ({data['period']})" if data["renews_at"] else ""
    print(f" level: {level}{until}", file=out)
    print(f"personalization: {'on' if data['personalization'] else 'off'}", file=out)


async def usage_in_store(
    settings: Settings, user_id: str, *, reset: bool, as_json: bool, out: TextIO
) -> int:
    """A user's usage straight from the store (and `reset`: forget it first)."""
    store = await open_store(settings)
    now = datetime.now(UTC)
    try:
        if await store.get_profile(user_id) is None:
            print(f"butler: no user {user_id!r} in {store_name(settings)}", file=sys.stderr)
            return 1
        if reset:
            await store.reset_usage(user_id)
        usage = await store.usage(user_id, now=now)
    finally:
        await store.close()
    data = usage_json(user_id, usage, settings.actors, now)
    print_usage({"reset": True, **data} if reset else data, as_json, out)
    return 0
