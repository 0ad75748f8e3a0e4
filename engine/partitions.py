"""Which partition a user belongs to: a stable hash of the user id, the same in every process
and every Python (not `hash()`, which is salted per process)."""

from __future__ import annotations

import hashlib


def partition_of(user_id: str | int, partitions: int) -> int:
    """The partition of `user_id` among `partitions` (0 .. partitions-1).

    Raises:
        ValueError: `partitions` is not positive.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be positive, not {partitions}")
    digest = hashlib.blake2b(str(user_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def partition_key(partition: int) -> str:
    """The lease key of a partition (`LeaseStore`)."""
    return f"partition:{partition}"
