"""`butler run`: the Telegram bot (when a token is set), the admin server and the memory
worker, until SIGTERM or SIGINT; then the actors drain."""

from __future__ import annotations

import argparse

from adapters.bootstrap.service import serve
from adapters.bootstrap.settings import Settings


async def main(settings: Settings, args: argparse.Namespace) -> int:
    await serve(settings)
    return 0
