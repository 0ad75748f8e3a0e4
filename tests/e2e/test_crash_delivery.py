"""Nothing accepted is lost after a crash: `butler run` as a real process, killed with SIGKILL
at chosen moments, behind a Bot API stand-in that keeps updates until an offset confirms them.

Counts are the Bot API's sendMessage calls per chat (what users see), not store rows. A reply
the Bot API accepted just before the kill, but whose mark had not committed yet, may be sent
once more after the restart: the one in flight of its chat. Which replies were in flight is
read from the store's delivery marks once the killed process is gone, not guessed from a
clock. Every other message is answered exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.bot_api_server import TOKEN, BotApiStandIn
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import free_port
from tests.support.tools import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FIRST_USER = 5_000_000


def _env(api: BotApiStandIn, llm: OpenAIServer, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    return env | {
        "BUTLER_DATA_DIR": str(data),
        "BUTLER_LLM_URL": llm.base_url,
        "BUTLER_LLM_RETRIES": "0",
        "BUTLER_LLM_CACHE_TTL_S": "0",
        "BUTLER_TELEGRAM_TOKEN": TOKEN,
        "BUTLER_TELEGRAM_API_URL": api.url,
        "BUTLER_TELEGRAM_POLL_TIMEOUT_S": "1",
        "BUTLER_RATE_LIMIT_PER_MINUTE": "0",
        "BUTLER_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
        "PYTHONPATH": str(ROOT),
    }


@asynccontextmanager
async def butler_run(
    api: BotApiStandIn, llm: OpenAIServer, data: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`butler run` as a process, polling the stand-in; SIGKILLed at the end if still alive."""
    polls = len(api.offsets)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.entrypoints.cli",
        "run",
        cwd=ROOT,
        env=_env(api, llm, data),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await api.wait_until(lambda: len(api.offsets) > polls, 90)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)


def rows(data: Path, role: str) -> int:
    conn = sqlite3.connect(data / "butler.sqlite3")
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM user_memory WHERE role = ?", (role,)
        ).fetchone()
        return int(count)
    finally:
        conn.close()


async def wait_rows(data: Path, role: str, count: int, within: float) -> None:
    async with asyncio.timeout(within):
        while rows(data, role) < count:  # noqa: ASYNC110 - polls the file, with a deadline
            await asyncio.sleep(0.02)  # noqa: TID251 - polls the file, with a deadline


def per_chat(api: BotApiStandIn, users: range) -> Counter[int]:
    counts = Counter(d.chat_id for d in api.sent)
    return Counter({user: counts[user] for user in users})


def marked(data: Path) -> set[int]:
    """Chats whose reply the store holds as delivered (the Bot API's receipt committed)."""
    conn = sqlite3.connect(data / "butler.sqlite3")
    try:
        found = conn.execute(
            "SELECT DISTINCT user_id FROM user_memory"
            " WHERE role = 'assistant' AND delivered IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return {int(user[3:]) for (user,) in found}


@dataclass(frozen=True, slots=True)
class AtKill:
    """What the Bot API had sent and the store had marked once a killed process was gone."""

    sent: Counter[int]
    marked: set[int]

    @property
    def in_flight(self) -> set[int]:
        """Chats whose reply went out but whose mark had not committed: sent once more."""
        return {chat for chat, n in self.sent.items() if n and chat not in self.marked}


def at_kill(api: BotApiStandIn, data: Path, users: range) -> AtKill:
    return AtKill(per_chat(api, users), marked(data))


def assert_answered_once_but_in_flight(
    api: BotApiStandIn, users: range, kills: list[AtKill]
) -> None:
    """Every chat answered; a second copy only for a reply in flight at a kill, decided by
    the store's marks at that kill, not by a clock."""
    counts = per_chat(api, users)
    assert all(n >= 1 for n in counts.values()), "a message was never answered"
    for chat, n in counts.items():
        resent = sum(chat in kill.in_flight for kill in kills)
        assert n <= 1 + resent, (
            f"chat {chat} got {n} replies, but its reply was in flight at {resent} kills"
        )
    for kill in kills:
        assert kill.marked <= set(+kill.sent), "a reply marked delivered was never sent"
        if kill.sent.total() >= 10:
            assert kill.marked, "replies went out but no mark ever committed"


async def send_all(api: BotApiStandIn, users: range) -> None:
    for user in users:
        await api.send_text(user, f"Добрый вечер, я {user}")


async def test_replies_stored_before_a_kill_are_sent_after_the_restart(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
):
    users = range(FIRST_USER, FIRST_USER + 60)  # 60 replies wait ~2 s for the 30/s bot budget
    async with butler_run(api, llm, tmp_path) as proc:
        await send_all(api, users)
        await wait_rows(tmp_path, "assistant", len(users), 60)  # every reply stored
        await api.wait_until(lambda: len(api.sent) >= 10, 60)  # and some sent and marked
        sent_before = len(api.sent)
        proc.send_signal(signal.SIGKILL)
    killed = at_kill(api, tmp_path, users)
    assert sent_before < len(users), "the kill came after every reply went out: no test"
    async with butler_run(api, llm, tmp_path):
        await api.wait_until(lambda: all(per_chat(api, users).values()), 60)
    assert_answered_once_but_in_flight(api, users, [killed])
    assert rows(tmp_path, "assistant") == len(users)


async def test_updates_redelivered_after_a_crash_are_stored_and_answered_once(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
):
    users = range(FIRST_USER, FIRST_USER + 40)
    api.hold_confirmations = True  # the kill comes before any offset reaches Telegram
    async with butler_run(api, llm, tmp_path) as proc:
        await send_all(api, users)
        await wait_rows(tmp_path, "user", len(users), 60)
        await wait_rows(tmp_path, "assistant", len(users), 60)
        proc.send_signal(signal.SIGKILL)
    killed = at_kill(api, tmp_path, users)
    assert len(api.pending) == len(users)  # nothing was confirmed: all come again
    api.hold_confirmations = False
    async with butler_run(api, llm, tmp_path):
        await api.wait_until(lambda: not api.pending, 60)  # the repeats were confirmed
        await api.wait_until(lambda: all(per_chat(api, users).values()), 60)
    assert rows(tmp_path, "user") == len(users)  # not stored a second time
    assert rows(tmp_path, "assistant") == len(users)  # nor answered a second time
    assert_answered_once_but_in_flight(api, users, [killed])


async def test_two_kills_in_a_row_lose_nothing(
    api: BotApiStandIn, llm: OpenAIServer, tmp_path: Path
):
    users = range(FIRST_USER, FIRST_USER + 20)
    await llm.set_mode("slow")  # 20 messages queue behind a model that does not answer
    kills: list[AtKill] = []
    async with butler_run(api, llm, tmp_path) as proc:
        await send_all(api, users)
        await wait_rows(tmp_path, "user", len(users), 60)
        proc.send_signal(signal.SIGKILL)
    kills.append(at_kill(api, tmp_path, users))
    await llm.set_mode("ok", slow_delay=None)
    llm.release_slow()
    async with butler_run(api, llm, tmp_path) as proc:
        # The recovery sweep is under way: some answers out, not all. Kill it again.
        await api.wait_until(lambda: len(api.sent) >= 1, 60)
        proc.send_signal(signal.SIGKILL)
    kills.append(at_kill(api, tmp_path, users))
    assert len(api.sent) < len(users), "the second kill came after the sweep ended: no test"
    async with butler_run(api, llm, tmp_path):
        await api.wait_until(lambda: all(per_chat(api, users).values()), 90)
    assert_answered_once_but_in_flight(api, users, kills)
    assert rows(tmp_path, "assistant") == len(users)
