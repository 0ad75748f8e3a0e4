"""The rules of leases, apart from any store: who may take, renew or free a key, and which
fencing token the next holder gets. Adapters apply them inside one atomic step each."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from engine.errors import LeaseLost, OwnedElsewhere
from engine.ports import Lease

FREE = ""
"""The owner of a released key: its row stays, so the next holder's token is greater."""

RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""The expiry a released key gets: long past, whatever the clocks say."""


def is_live(lease: Lease, now: datetime) -> bool:
    """Whether `lease` holds its key at `now` (held by someone and not yet expired)."""
    return lease.owner != FREE and lease.expires_at > now


def expiry(now: datetime, ttl_s: float) -> datetime:
    """`ttl_s` after `now`.

    Raises:
        ValueError: `ttl_s` is not a positive number of seconds.
    """
    if not ttl_s > 0:
        raise ValueError(f"a lease needs a positive time to live, not {ttl_s!r}")
    return now + timedelta(seconds=ttl_s)


def taken(current: Lease | None, key: str, owner: str, *, ttl_s: float, now: datetime) -> Lease:
    """The row of `key` once `owner` acquired it, given the `current` row (None: never held).

    Raises:
        OwnedElsewhere: another owner holds `current` unexpired.
        ValueError: an empty owner or key, or a time to live that is not positive.
    """
    if not key or owner == FREE:
        raise ValueError("a lease needs a key and an owner")
    until = expiry(now, ttl_s)
    if current is None:
        return Lease(key, owner, 1, until)
    if is_live(current, now):
        if current.owner != owner:
            raise OwnedElsewhere(
                key, owner=current.owner, expires_at=current.expires_at, token=current.token
            )
        return replace(current, expires_at=until, taken_from="")
    taken_from = current.owner if current.owner not in {FREE, owner} else ""
    return Lease(key, owner, current.token + 1, until, current.nudges, taken_from)


def renewed(current: Lease | None, lease: Lease, *, ttl_s: float, now: datetime) -> Lease:
    """The row of `lease.key` once `lease` was renewed, given the `current` row.

    Raises:
        LeaseLost: the key has another holder or token (taken over, or released).
    """
    until = expiry(now, ttl_s)
    if current is None or not current.same_claim(lease):
        raise LeaseLost(lease.key)
    return replace(current, expires_at=until, taken_from="")


def released(current: Lease | None, lease: Lease) -> Lease | None:
    """The row once `lease` was released, or None when `lease` no longer holds it (no-op)."""
    if current is None or not current.same_claim(lease):
        return None
    return replace(current, owner=FREE, expires_at=RELEASED_AT, taken_from="")


def fence(current: Lease | None, lease: Lease) -> None:
    """Raises: LeaseLost unless `current` is `lease`'s claim (the check of a fenced write)."""
    if current is None or not current.same_claim(lease):
        raise LeaseLost(lease.key)
