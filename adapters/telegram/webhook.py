"""Webhook mode: Telegram posts each update; 200 once it is stored (or can never be read),
503 on a transient failure so that Telegram sends it again, 401 for a wrong secret."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from aiogram import Bot
from aiogram.methods import SetWebhook
from aiohttp import web

from adapters.telegram.config import TelegramSettings
from adapters.telegram.dispatch import Intake
from adapters.telegram.updates import ALLOWED_UPDATES, Poisoned, read_update, update_id_of

log = logging.getLogger(__name__)


def webhook_app(intake: Intake, path: str, secret: str) -> web.Application:
    """The aiohttp application Telegram posts updates to."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return web.json_response({"error": "wrong secret token"}, status=401)
        try:
            data = await request.json()
        except ValueError:
            intake.metrics.update("unknown", "malformed")
            log.warning("malformed update refused")
            return web.json_response({"error": "malformed update"}, status=400)
        update_id = update_id_of(data)
        if update_id is None:
            intake.metrics.update("unknown", "malformed")
            log.warning("update without an update_id refused")
            return web.json_response({"error": "malformed update"}, status=400)
        try:
            update = read_update(data, intake.bot)
        except ValueError as exc:
            # Refusing it would only bring it back for a day; nobody can ever read it.
            intake.give_up(Poisoned(update_id, str(exc)))
            return web.json_response({"ok": True})
        if await intake.handle_in_order(update):
            return web.json_response({"ok": True})
        return web.json_response({"error": "try again later"}, status=503)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(path, receive)
    return app


async def serve_webhook(intake: Intake, tg: TelegramSettings, stop: asyncio.Event) -> None:
    await run_webhook(lambda path, secret: webhook_app(intake, path, secret), intake.bot, tg, stop)


async def run_webhook(
    make_app: Callable[[str, str], web.Application],
    bot: Bot,
    tg: TelegramSettings,
    stop: asyncio.Event,
) -> None:
    """Serve `make_app(path, secret)` on BUTLER_WEBHOOK_LISTEN and set the webhook, until
    `stop` (shared by `butler run` and `butler front`)."""
    secret = tg.webhook_secret or secrets.token_urlsafe(32)
    path = urlsplit(tg.webhook_url).path or "/"
    host, _, port = tg.webhook_listen.rpartition(":")
    runner = web.AppRunner(make_app(path, secret), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or "127.0.0.1", int(port))
        await site.start()
        await bot(
            SetWebhook(
                url=tg.webhook_url,
                secret_token=secret,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=False,
            )
        )
        log.info("webhook mode: listening on %s", tg.webhook_listen)
        await stop.wait()
    finally:
        await runner.cleanup()  # stops intake; in-flight requests finish first
