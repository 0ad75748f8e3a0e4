"""`butler front`: the scale-out front door (Telegram in, the broker out), until SIGTERM or
SIGINT; needs BUTLER_BROKER_URL and BUTLER_TELEGRAM_TOKEN."""

from __future__ import annotations

import argparse

from adapters.bootstrap.front import serve_front
from adapters.bootstrap.settings import Settings


async def main(settings: Settings, args: argparse.Namespace) -> int:
    await serve_front(settings)
    return 0
