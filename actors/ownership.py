"""The default `Ownership`: a process serves a user while it holds the store lease
`user:<id>`, under an owner id of its own (`<hostname>:<pid>:<random>`).

A lease whose holder ran on this host and whose process is gone (killed, crashed) is taken
at once rather than after its expiry: a `butler chat` killed and started again serves its
user again straight away. A holder on another host, or alive here, keeps its lease until it
expires.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from engine import leases as rules
from engine.errors import OwnedElsewhere
from engine.ports import Clock, Lease, LeaseStore

USER_PREFIX = "user:"


def process_owner_id() -> str:
    """An owner id naming this process, unique even when a pid is reused: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def user_key(user_id: str) -> str:
    return f"{USER_PREFIX}{user_id}"


def gone_from_this_host(owner: str, *, hostname: str | None = None) -> bool:
    """Whether `owner` (another owner id than this process's) names a process of this host
    that no longer runs, is a zombie, or had this process's pid (an earlier incarnation: a
    container's pid 1 restarted).

    A pid reused by another process reads as alive: the lease then simply waits for its
    expiry. Hosts are told apart by name, so processes sharing a store from separate pid
    namespaces need distinct hostnames (containers have them by default), or they would take
    each other's users early (fencing still keeps one writer).
    """
    pid = _local_pid(owner, socket.gethostname() if hostname is None else hostname)
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(pid)


def _local_pid(owner: str, hostname: str) -> int | None:
    """The pid an owner id of `hostname` names; None for another host or not an owner id."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit() or ":".join(parts[:-2]) != hostname:
        return None
    pid = int(parts[-2])
    return pid if pid > 0 else None


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
        """Renew every lease in one store call (`renew_leases`).

        Raises:
            StoreUnavailable: nothing was renewed now (the caller tries again next round).
        """
        if not leases:
            return []
        return await self._store.renew_leases(leases, ttl_s=self.ttl_s, now=self._clock.now())

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
