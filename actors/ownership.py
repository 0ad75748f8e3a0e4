"""The default `Ownership`: a process serves a user while it holds the store lease
`user:<id>`, under an owner id of its own (`<hostname>:<pid>:<random>`).

A lease whose holder ran on this host and whose process is gone (killed, crashed) is taken
at once rather than after its expiry: a `butler chat` killed and started again serves its
user again straight away. A holder on another host, or alive here, keeps its lease until it
expires.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from engine import leases as rules
from engine.errors import LeaseLost, OwnedElsewhere, StoreUnavailable
from engine.ports import Clock, Lease, LeaseStore

USER_PREFIX = "user:"


def process_owner_id() -> str:
    """An owner id naming this process, unique even when a pid is reused: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def user_key(user_id: str) -> str:
    return f"{USER_PREFIX}{user_id}"


def gone_from_this_host(owner: str, *, hostname: str | None = None) -> bool:
    """Whether `owner` names a process of this host that no longer runs (or is a zombie).

    A pid reused by another process reads as alive: the lease then simply waits for its
    expiry. Hosts are told apart by name, so two containers given one hostname and separate
    pid namespaces could take each other's leases early (fencing still keeps one writer).
    """
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    host = ":".join(parts[:-2])
    if host != (hostname if hostname is not None else socket.gethostname()):
        return False
    pid = int(parts[-2])
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited and waits only for its parent to reap it (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class StoreUserLeases:
    """`Ownership` by one store lease per user, renewed every third of its time to live."""

    def __init__(self, store: LeaseStore, clock: Clock, *, owner: str, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"the lease time to live must be positive, not {ttl_s!r}")
        self._store = store
        self._clock = clock
        self.owner = owner
        self.ttl_s = ttl_s

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    async def claim(self, user_id: str) -> Lease:
        """Raises: OwnedElsewhere when another live process holds the user's lease."""
        key = user_key(user_id)
        try:
            return await self._store.acquire_lease(
                key, self.owner, ttl_s=self.ttl_s, now=self._clock.now()
            )
        except OwnedElsewhere as held:
            if not held.token or not gone_from_this_host(held.owner):
                raise
            # Freed only if the dead holder still holds it with that token; then taken.
            dead = Lease(key, held.owner, held.token, held.expires_at)
            await self._store.release_lease(dead)
            lease = await self._store.acquire_lease(
                key, self.owner, ttl_s=self.ttl_s, now=self._clock.now()
            )
            return replace(lease, taken_from=held.owner)

    async def renew(self, leases: Sequence[Lease]) -> list[Lease | None]:
        """Renew every lease at once (SQLite commits them together); a lease the store could
        not renew now is returned as it was (it may still hold: tried again next round).

        Raises:
            StoreUnavailable: no lease could be renewed.
        """
        now = self._clock.now()
        outcomes = await asyncio.gather(
            *(self._store.renew_lease(lease, ttl_s=self.ttl_s, now=now) for lease in leases),
            return_exceptions=True,
        )
        renewed: list[Lease | None] = []
        unavailable: list[StoreUnavailable] = []
        for lease, outcome in zip(leases, outcomes, strict=True):
            if isinstance(outcome, LeaseLost):
                renewed.append(None)
            elif isinstance(outcome, StoreUnavailable):
                unavailable.append(outcome)
                renewed.append(lease)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                renewed.append(outcome)
        if unavailable and len(unavailable) == len(leases):
            raise unavailable[0]
        return renewed

    async def release(self, lease: Lease) -> None:
        await self._store.release_lease(lease)

    async def hand_over(self, user_id: str) -> Lease | None:
        return await self._store.nudge_lease(user_key(user_id), now=self._clock.now())

    async def orphaned(self) -> list[str]:
        """Users of unreleased leases (listed as live at the epoch) that expired, or whose
        holder is gone from this host; not this process's own."""
        now = self._clock.now()
        unreleased = await self._store.leases(USER_PREFIX, now=rules.RELEASED_AT)
        return [
            lease.key.removeprefix(USER_PREFIX)
            for lease in unreleased
            if lease.owner != self.owner
            and (lease.expires_at <= now or gone_from_this_host(lease.owner))
        ]
