"""Bursts through the Telegram emulator and the recording model server: every prompt holds
the conversation as it stands, roles alternating; nothing of a long burst is dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap.settings import Settings
from adapters.storage.sqlite import SqliteStore
from tests.e2e.test_telegram import butler, emulator, stored  # noqa: F401 - the fixture
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import Emulator

pytestmark = pytest.mark.anyio


def chat(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


async def wait_answered(settings: Settings, user_id: str, count: int, within: float) -> None:
    """Until the store holds `count` messages of the user and none is owed a reply."""
    assert settings.sqlite_path is not None
    async with asyncio.timeout(within):
        while True:
            store = await SqliteStore.open(settings.sqlite_path)
            try:
                owed = await store.unanswered(user_id)
                turn = await store.load_turn(user_id, limit=1000, before="\uffff")
            finally:
                await store.close()
            users = [e for e in turn.memory.events if e.role == "user"]
            if len(users) >= count and not owed:
                return
            await asyncio.sleep(0.05)  # noqa: TID251 - polls the file, with a deadline


async def test_a_burst_of_five_sees_every_reply_before_it(
    emulator: Emulator,  # noqa: F811 - the fixture
    llm: OpenAIServer,
    tmp_path: Path,
):
    await llm.set_mode("slow")  # the first turn waits until all five are stored
    async with butler(emulator, llm, tmp_path, BUTLER_COALESCE_MS="0") as running:
        for n in range(5):
            await emulator.send_text(901, f"Строка {n}")
        await wait_for_users(running.settings, "tg:901", 5)
        await llm.set_mode("ok")
        texts = await emulator.texts(901, 5)
    prompts = [chat(body) for body in llm.requests]
    assert len(prompts) == 5
    for k, prompt in enumerate(prompts):
        roles = [role for role, _ in prompt]
        assert roles == ["user", "assistant"] * k + ["user"], k
        assert [c for r, c in prompt if r == "user"] == [f"Строка {n}" for n in range(k + 1)]
        assert [c for r, c in prompt if r == "assistant"] == texts[:k]  # as delivered


async def wait_for_users(settings: Settings, user_id: str, count: int) -> None:
    async with asyncio.timeout(30):
        while len([e for e in (await stored(settings, user_id))[1] if e.role == "user"]) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # noqa: TID251 - polls the file, with a deadline


async def test_a_burst_of_twelve_is_stored_and_answered_whole(
    emulator: Emulator,  # noqa: F811 - the fixture
    llm: OpenAIServer,
    tmp_path: Path,
):
    # The default limits: bursts of 10; the two over them join a turn, none is dropped.
    lines = [f"Пересланное {n}" for n in range(12)]
    async with butler(emulator, llm, tmp_path) as running:
        for line in lines:
            await emulator.send_text(902, line)
        await wait_answered(running.settings, "tg:902", 12, 60)
        _, events = await stored(running.settings, "tg:902")
        replies = [e for e in events if e.role == "assistant"]
        texts = await emulator.texts(902, len(replies))
    assert [e.content for e in events if e.role == "user"] == lines
    assert len(texts) == len(replies) == len(llm.requests) < len(lines)  # fewer turns
    asked = [line for body in llm.requests for _, c in chat(body)[-1:] for line in c.split("\n")]
    assert asked == lines  # each line reached the model once, in order, as its turn's text
    assert not any("быстрее" in t for t in texts)  # no "you write too fast" notice
