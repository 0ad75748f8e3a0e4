"""A Bot API stand-in for router tests: a session middleware that answers every call itself.

It records what the bot sent (messages, chat actions) and lets tests wait for them with a
deadline. Files named by getFile are served over real HTTP by `FileServer`.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import (
    AnswerCallbackQuery,
    GetFile,
    GetMe,
    SendChatAction,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import Chat, File, Message, User

TOKEN = "42:TEST-router-token"


@dataclass
class Sent:
    chat_id: int
    text: str
    entities: list[Any] | None
    reply_markup: Any


@dataclass
class FakeBotAPI(BaseRequestMiddleware):
    files: dict[str, bytes] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Any:
        self.calls.append(type(method).__name__)
        self._changed.set()
        if isinstance(method, GetMe):
            return User(id=42, is_bot=True, first_name="Butler")
        if isinstance(method, SendChatAction):
            self.actions.append((int(method.chat_id), str(method.action)))
            return True
        if isinstance(method, AnswerCallbackQuery):
            return True
        if isinstance(method, GetFile):
            path = f"voice/{method.file_id}.oga"
            return File(file_id=method.file_id, file_unique_id=method.file_id, file_path=path)
        if isinstance(method, SendMessage):
            chat_id = int(method.chat_id)
            self.sent.append(Sent(chat_id, method.text, method.entities, method.reply_markup))
            return Message(
                message_id=next(self._ids),
                date=datetime.now(UTC),
                chat=Chat(id=chat_id, type="private"),
                text=method.text,
            )
        raise AssertionError(f"unexpected Bot API call {type(method).__name__}")

    def texts(self, chat_id: int) -> list[str]:
        return [s.text for s in self.sent if s.chat_id == chat_id]

    async def wait(self, check: Any, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not check():
                self._changed.clear()
                await self._changed.wait()


def fake_bot(api: FakeBotAPI, file_base: str = "http://127.0.0.1:9") -> Bot:
    session = AiohttpSession(
        api=TelegramAPIServer(
            base="http://127.0.0.1:9/bot{token}/{method}",
            file=f"{file_base}/file/bot{{token}}/{{path}}",
        )
    )
    session.middleware(api)
    return Bot(TOKEN, session=session)
