"""`butler run` against telegram-test-api, as a process: `python -m tests.support.run_emulated`.

The same `serve` that `butler run` calls (without the admin server), with the emulator's gaps
filled by `EmulatorGaps` (test-only) and files served from `TEST_FILE_URL`. Settings come from
the environment as for `butler run`; SIGTERM and SIGINT stop it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiogram.client.telegram import TelegramAPIServer

from adapters.bootstrap.service import serve
from adapters.bootstrap.settings import Settings
from adapters.telegram.service import make_session
from tests.support.telegram_emulator import EmulatorGaps


async def main() -> None:
    settings = Settings.from_env()
    base = settings.telegram.api_url
    api = TelegramAPIServer(
        base=f"{base}/bot{{token}}/{{method}}",
        file=f"{os.environ['TEST_FILE_URL']}/file/bot{{token}}/{{path}}",
    )
    gaps = EmulatorGaps({}, base)
    try:
        await serve(
            settings,
            telegram_session=make_session(settings.telegram, api=api, middlewares=[gaps]),
            on_ready=lambda _: print("READY", flush=True),
            admin=False,
        )
    finally:
        await gaps.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main())
