"""The Telegram front door: aiogram routers, our own polling loop or a webhook, paced sends."""
