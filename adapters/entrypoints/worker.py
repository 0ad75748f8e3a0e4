"""`butler worker [--once] [--interval S]`: compress eligible users' memory from outside the
service (through its admin API, or a registry of its own when no service runs)."""

from __future__ import annotations

import argparse

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.worker import worker


async def main(settings: Settings, args: argparse.Namespace) -> int:
    return await worker(settings, once=args.once, interval_s=args.interval)
