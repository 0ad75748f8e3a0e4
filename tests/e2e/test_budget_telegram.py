"""The kill switch and token budgets end to end: `butler run` through the Telegram emulator,
the recording model server (it reports usage), a real SQLite file, `/metrics`, and
`butler admin usage` as a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.bootstrap.settings import Settings
from engine.budget import REDUCED_AT, next_day
from engine.persona import budget_spent
from engine.prompt import PLAIN_SYSTEM
from tests.e2e.test_telegram import (  # noqa: F401 - the fixture
    ADMIN_TOKEN,
    PERSONA_MARK,
    ROOT,
    butler,
    emulator,
    stored,
)
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import Emulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DAILY = 800
"""Tokens a day: six turns of the recording server's usage (words) fit below 80 %, the
seventh starts above it, the eighth above 100 % (checked below from what was recorded)."""


def usage_of(body: dict[str, Any], reply: str) -> int:
    """The usage the recording server reports for a request: words in, words out."""
    words_in = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return words_in + len(reply.split())


def chat(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


async def metrics(settings: Settings) -> str:
    host, port = settings.admin_addr
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as res:
        return await res.text()


async def admin_cli(settings: Settings, *argv: str) -> tuple[int, str]:
    """`butler admin ...` as an operator runs it: another process, the service's admin API."""
    host, port = settings.admin_addr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BUTLER_DATA_DIR": str(settings.data_dir),
        "BUTLER_ADMIN_URL": f"http://{host}:{port}",
        "BUTLER_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.entrypoints.cli",
        "admin",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"using the store directly" not in err  # it went through the running service
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_kill_switch_asks_the_plain_model_and_says_so(
    emulator: Emulator,  # noqa: F811 - the fixture
    llm: OpenAIServer,
    tmp_path: Path,
):
    # The seed's bare name, read because BUTLER_PERSONALIZATION_ENABLED is unset.
    async with butler(emulator, llm, tmp_path, PERSONALIZATION_ENABLED="false") as running:
        for n, text in enumerate(("Добрый вечер", "Я люблю чай", "Что я люблю?"), start=1):
            await emulator.send_text(1101, text)
            texts = await emulator.texts(1101, n)
        scraped = await metrics(running.settings)
    assert len(llm.requests) == 3
    for body, text in zip(
        llm.requests, ("Добрый вечер", "Я люблю чай", "Что я люблю?"), strict=True
    ):
        assert chat(body) == [("system", PLAIN_SYSTEM), ("user", text)]  # no persona, no history
    assert all(not t.startswith(PERSONA_MARK) for t in texts)
    assert texts[2].endswith("You said: Что я люблю?")
    assert "butler_personalization_enabled 0.0" in scraped
    # The delivery ledger still holds every message and reply, each reply delivered.
    profile, events = await stored(running.settings, "tg:1101")
    assert [e.role for e in events] == ["user", "assistant"] * 3
    assert profile is not None
    assert profile.memory_summary == ""


async def test_a_daily_budget_goes_brief_then_spent_and_an_admin_reset_restores_answers(
    emulator: Emulator,  # noqa: F811 - the fixture
    llm: OpenAIServer,
    tmp_path: Path,
):
    user, uid = 1201, "tg:1201"
    env = {"BUTLER_TOKEN_BUDGET_DAILY": str(DAILY), "BUTLER_LLM_CACHE_TTL_S": "0"}
    async with butler(emulator, llm, tmp_path, **env) as running:
        texts: list[str] = []
        for n in range(12):  # until the butler says the budget is spent
            asked = len(llm.requests)
            await emulator.send_text(user, f"Вопрос номер {n}")
            texts = await emulator.texts(user, n + 1)
            if len(llm.requests) == asked:
                break
        else:
            raise AssertionError(f"the budget was never spent: {texts}")
        renewal = next_day(datetime.now(UTC))
        code, shown = await admin_cli(running.settings, "usage", uid, "--json")
        before_reset = await metrics(running.settings)
        code_reset, _ = await admin_cli(running.settings, "usage", uid, "--reset")
        await emulator.send_text(user, "А теперь?")
        after = await emulator.texts(user, len(texts) + 1)
        after_reset = await metrics(running.settings)

    # Replay the budget from what the model server was asked and answered.
    replies = [t for t in texts if t.startswith(PERSONA_MARK)]
    assert len(replies) == len(llm.requests) - 1  # the last request is after the reset
    spent, levels = 0, []
    for body, reply in zip(llm.requests, replies, strict=False):
        levels.append("reduced" if spent >= REDUCED_AT * DAILY else "normal")
        history = chat(body)[1:-1]
        if levels[-1] == "reduced":
            assert len(history) <= 5  # the summary (none yet) and the last 5 events only
        else:
            assert len(history) == 2 * (len(levels) - 1)  # the whole conversation so far
        spent += usage_of(body, reply)
    assert spent >= DAILY
    assert levels.count("normal") >= 4
    assert "reduced" in levels
    brief = chat(llm.requests[levels.index("reduced")])
    assert brief[0][1].startswith("Ты — Alfred-style дворецкий")  # still in persona
    assert len(brief[1:-1]) == 4  # 5 events less the reply whose message fell outside

    # The spent line: in persona, in Russian, naming tomorrow 00:00 UTC; stored and delivered.
    _, events = await stored(running.settings, uid)
    asked, answered = events[-4], events[-3]  # then the message after the reset, its reply
    assert (answered.reply_to, answered.content) == (asked.id, texts[-1])
    assert texts[-1] == budget_spent("day", renewal, "ru", asked.id)
    assert f"{renewal.day} " in texts[-1]
    assert "в 00:00 UTC" in texts[-1]

    assert code == 0
    usage = json.loads(shown)
    assert (usage["level"], usage["period"], usage["day"]["limit"]) == ("exhausted", "day", DAILY)
    assert usage["day"]["tokens"] == spent
    assert 'butler_budget_degraded_total{level="exhausted"} 1.0' in before_reset
    assert 'butler_budget_users{level="exhausted",period="day"} 1.0' in before_reset
    assert "butler_personalization_enabled 1.0" in before_reset

    assert code_reset == 0
    assert after[-1].startswith(PERSONA_MARK)
    assert after[-1].endswith("You said: А теперь?")
    assert 'butler_budget_users{level="exhausted",period="day"} 0.0' in after_reset
