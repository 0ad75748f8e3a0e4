"""`butler run` end to end over real HTTP: the Bot API emulator, an OpenAI-style server, a
real SQLite file, the real aiogram session (with `EmulatorGaps` for what the emulator lacks).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.bootstrap.service import serve
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports
from adapters.storage.sqlite import SqliteStore
from adapters.stt.whisper import LazyWhisperModel, WhisperTranscriber
from adapters.telegram.service import make_session
from adapters.telegram.split import utf16_len
from adapters.telegram.texts import text as tg_text
from engine.persona import variants
from tests.support.audio import RU_KEY_WORDS, key_word_share
from tests.support.openai_server import OpenAIServer
from tests.support.telegram_emulator import TOKEN, Emulator, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
ADMIN_TOKEN = "admin-test-token"
PERSONA_MARK = "[system: Ты — Alfred-style дворецкий"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = await Emulator.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def llm() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as server:
        yield server


@dataclass
class Running:
    app: App
    settings: Settings


@asynccontextmanager
async def butler(
    emulator: Emulator,
    llm: OpenAIServer,
    tmp_path: Path,
    *,
    transcriber: Any = None,
    **env: str,
) -> AsyncIterator[Running]:
    settings = Settings.from_env(
        {
            "BUTLER_DATA_DIR": str(tmp_path / "data"),
            "BUTLER_LLM_URL": llm.base_url,
            "BUTLER_LLM_RETRIES": "0",
            "BUTLER_TELEGRAM_TOKEN": TOKEN,
            "BUTLER_TELEGRAM_API_URL": emulator.url,
            "BUTLER_TELEGRAM_POLL_TIMEOUT_S": "1",
            "BUTLER_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
            "BUTLER_ADMIN_TOKEN": ADMIN_TOKEN,
            **env,
        }
    )
    session = make_session(settings.telegram, api=emulator.api, middlewares=[emulator.gaps])
    stop = asyncio.Event()
    ready: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            settings,
            stop=stop,
            telegram_session=session,
            on_ready=ready.set_result,
            ports=Ports(transcriber=transcriber),
        )
    )
    try:
        app = await asyncio.wait_for(asyncio.shield(ready), 30)
        yield Running(app, settings)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def stored(settings: Settings, user_id: str) -> tuple[Any, list[Any]]:
    assert settings.sqlite_path is not None
    store = await SqliteStore.open(settings.sqlite_path)
    try:
        profile = await store.get_profile(user_id)
        context = await store.load_turn(user_id, limit=1000, before="\uffff")
        return profile, list(context.memory.events)
    finally:
        await store.close()


async def test_text_round_trip_in_persona(emulator: Emulator, llm: OpenAIServer, tmp_path: Path):
    async with butler(emulator, llm, tmp_path) as running:
        await emulator.send_text(101, "/start")
        greeting = await emulator.texts(101, 1)
        assert greeting[0] == tg_text("start_new", "ru", name="Брюс")

        await emulator.send_text(101, "Добрый вечер, Альфред")
        texts = await emulator.texts(101, 2)
        assert texts[1].startswith(PERSONA_MARK)
        assert texts[1].endswith("You said: Добрый вечер, Альфред")
        assert any(chat == 101 and action == "typing" for chat, action, _ in emulator.gaps.actions)
    profile, events = await stored(running.settings, "tg:101")
    assert profile is not None
    assert profile.language == "ru"
    assert [(e.role, e.source) for e in events] == [("user", "text"), ("assistant", "text")]


async def test_english_speakers_are_greeted_in_english(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    async with butler(emulator, llm, tmp_path) as running:
        await emulator.send_text(102, "/start", language="en-GB", name="Bruce")
        assert (await emulator.texts(102, 1))[0] == tg_text("start_new", "en", name="Bruce")
        await emulator.send_text(102, "/help", language="en-GB", name="Bruce")
        assert (await emulator.texts(102, 2))[1] == tg_text("help", "en", minutes=5)
    profile, _ = await stored(running.settings, "tg:102")
    assert profile is not None
    assert profile.language == "en"


async def test_three_users_at_once_keep_their_own_order(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    users = (201, 202, 203)
    # One turn per message, so each reply shows which message it answered.
    async with butler(emulator, llm, tmp_path, BUTLER_COALESCE_MS="0"):
        for n in range(4):
            for user in users:
                await emulator.send_text(user, f"u{user} m{n}")
        for user in users:
            texts = await emulator.texts(user, 4)
            said = [t.split("You said: ", 1)[1] for t in texts]
            assert said == [f"u{user} m{n}" for n in range(4)]


async def test_a_long_reply_is_split_at_boundaries(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    paragraph = "Позвольте заметить, сэр, что погода в Готэме переменчива. " * 30
    long_text = "\n\n".join(f"{n}. {paragraph.strip()}" for n in range(5))
    llm.reply = lambda messages: long_text
    async with butler(emulator, llm, tmp_path):
        await emulator.send_text(301, "Расскажите подробно")
        messages = await emulator.wait_for(
            301, lambda m: "".join(x["text"] for x in m).count("переменчива") >= 150
        )
    texts = [m["text"] for m in messages]
    assert len(texts) >= 3
    assert all(utf16_len(t) <= 4096 for t in texts)
    assert all(t.endswith(".") for t in texts)  # cut at paragraph or sentence ends only
    assert "\n\n".join(texts).split() == long_text.split()


async def test_llm_down_gives_the_degraded_answer(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    await llm.set_mode("down")
    async with butler(emulator, llm, tmp_path):
        await emulator.send_text(401, "Вы здесь?")
        texts = await emulator.texts(401, 1)
    assert texts[0] in variants("degraded", "ru")


async def test_forget_asks_then_erases_everything(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    async with butler(emulator, llm, tmp_path) as running:
        await emulator.send_text(501, "Запомните: я люблю чай")
        await emulator.texts(501, 1)
        await emulator.send_text(501, "/forget")
        messages = await emulator.wait_for(501, lambda m: len(m) >= 2)
        ask = messages[1]
        assert ask["text"] == tg_text("forget_ask", "ru")
        buttons = ask["reply_markup"]["inline_keyboard"][0]
        assert [b["callback_data"] for b in buttons] == ["forget:yes", "forget:no"]
        profile, events = await stored(running.settings, "tg:501")
        assert profile is not None
        assert len(events) == 2  # nothing is erased before the confirmation

        await emulator.press(501, "forget:yes", ask)
        texts = await emulator.texts(501, 3)
        assert texts[2] == tg_text("forget_done", "ru")
        assert running.app.registry.get("tg:501") is None
    profile, events = await stored(running.settings, "tg:501")
    assert profile is None
    assert events == []


async def test_strangers_are_refused_when_an_allowlist_is_set(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    async with butler(emulator, llm, tmp_path, BUTLER_ALLOWED_USERS="601") as running:
        await emulator.send_text(602, "Откройте, полиция Готэма")
        assert (await emulator.texts(602, 1))[0] == tg_text("not_allowed", "ru")
        await emulator.send_text(601, "Это я")
        assert "You said: Это я" in (await emulator.texts(601, 1))[0]
    profile, events = await stored(running.settings, "tg:602")
    assert (profile, events) == (None, [])


async def test_messages_over_the_rate_are_stored_and_answered_with_a_turn(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    env = {
        "BUTLER_RATE_LIMIT_PER_MINUTE": "1",
        "BUTLER_RATE_LIMIT_BURST": "1",
        "BUTLER_COALESCE_MS": "0",  # only the rate folds here
    }
    await llm.set_mode("slow")  # the first turn runs while the other two come over the rate
    async with butler(emulator, llm, tmp_path, **env) as running:
        for n in range(3):
            await emulator.send_text(701, f"сообщение {n}")
        await llm.wait_for_hits(1)
        async with asyncio.timeout(30):
            while len((await stored(running.settings, "tg:701"))[1]) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # noqa: TID251 - polls the file, with a deadline
        await llm.set_mode("ok")
        texts = await emulator.texts(701, 2)
    assert len(texts) == 2  # the first message's turn, then one for the two over the rate
    assert texts[0].endswith("You said: сообщение 0")
    assert texts[1].endswith("You said: сообщение 1\nсообщение 2")
    _, events = await stored(running.settings, "tg:701")
    users = [e for e in events if e.role == "user"]
    assert [e.content for e in users] == ["сообщение 0", "сообщение 1", "сообщение 2"]
    replies = [e for e in events if e.role == "assistant"]
    assert [r.reply_to for r in replies] == [users[0].id, users[2].id]


async def test_other_content_gets_a_polite_answer(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    async with butler(emulator, llm, tmp_path):
        body = emulator._message(801, language="ru", name="Брюс") | {
            "location": {"latitude": 51.5, "longitude": -0.12}
        }
        await emulator._post("/sendMessage", body)
        assert (await emulator.texts(801, 1))[0] == tg_text("unsupported", "ru")


async def test_sigterm_drains_the_turn_in_hand_and_keeps_the_rest(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    """A real process: SIGTERM while a reply is being generated; that reply still goes out,
    the message behind it stays stored and is answered by the next start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
    env |= {
        "BUTLER_DATA_DIR": str(tmp_path / "data"),
        "BUTLER_LLM_URL": llm.base_url,
        "BUTLER_LLM_RETRIES": "0",
        "BUTLER_TELEGRAM_TOKEN": TOKEN,
        "BUTLER_TELEGRAM_API_URL": emulator.url,
        "BUTLER_TELEGRAM_POLL_TIMEOUT_S": "1",
        "TEST_FILE_URL": f"http://127.0.0.1:{emulator.files.port}",
        "PYTHONPATH": str(ROOT),
    }

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.run_emulated",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"READY"
        return proc

    await llm.set_mode("slow")
    proc = await start()
    await emulator.send_text(901, "первое")
    await llm.wait_for_hits(1)
    await emulator.send_text(901, "второе")
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path / "data")})
    async with asyncio.timeout(30):
        while len((await stored(settings, "tg:901"))[1]) < 2:  # noqa: ASYNC110 - another process's file
            await asyncio.sleep(0.05)  # noqa: TID251 - nothing to wait on across processes
    proc.send_signal(signal.SIGTERM)
    llm.release_slow()
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    texts = await emulator.texts(901, 1)
    assert texts[0].endswith("You said: первое")

    await llm.set_mode("ok")
    proc = await start()
    try:
        texts = await emulator.texts(901, 2)
        assert texts[1].endswith("You said: второе")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


async def test_butler_run_serves_the_admin_api_beside_the_bot(
    emulator: Emulator, llm: OpenAIServer, tmp_path: Path
):
    async with butler(emulator, llm, tmp_path) as running:
        await emulator.send_text(1001, "Альфред, вы на посту?")
        await emulator.texts(1001, 1)
        host, port = running.settings.admin_addr
        url = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/admin/actors") as response:
                assert response.status == 401
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.get(f"{url}/admin/actors/tg:1001", headers=auth) as response:
                assert response.status == 200
                body = await response.json()
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
    assert body["state"] == "idle"
    assert 'butler_telegram_updates_total{kind="message",outcome="handled"} 1.0' in metrics
    samples = [line for line in metrics.splitlines() if "{" in line and line[0] != "#"]
    labels = [line[line.index("{") : line.index("}") + 1] for line in samples]
    assert labels
    assert not [label for label in labels if "1001" in label]  # never a user id in a label


async def test_without_a_token_the_engine_and_admin_server_run_alone(tmp_path: Path):
    settings = Settings.from_env(
        {
            "BUTLER_DATA_DIR": str(tmp_path / "data"),
            "BUTLER_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
            "BUTLER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )
    stop = asyncio.Event()
    ready: asyncio.Future[App] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop=stop, on_ready=ready.set_result))
    try:
        await asyncio.wait_for(asyncio.shield(ready), 30)
        host, port = settings.admin_addr
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_voice_note_is_transcribed_and_answered_in_persona(
    emulator: Emulator,
    llm: OpenAIServer,
    tmp_path: Path,
    whisper_model: LazyWhisperModel,
    voice_notes: dict[str, bytes],
):
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    transcriber = WhisperTranscriber(settings.stt, data_dir=tmp_path, model=whisper_model)
    async with butler(emulator, llm, tmp_path, transcriber=transcriber) as running:
        await emulator.send_voice(1101, voice_notes["ru"], duration=4)
        [reply] = await emulator.wait_for(1101, lambda m: len(m) >= 1, within=90)
        await emulator.send_voice(1101, b"OggS\x00 this is not audio", duration=2)
        texts = await emulator.texts(1101, 2, within=90)
    heard = reply["text"].split("\n\n", 1)[0]
    assert key_word_share(heard, RU_KEY_WORDS) >= 0.5, heard
    assert reply["text"].startswith(heard)
    entities = (
        json.loads(reply["entities"]) if isinstance(reply["entities"], str) else reply["entities"]
    )
    assert entities[0]["type"] == "blockquote"
    assert PERSONA_MARK in reply["text"]
    assert any(texts[1].startswith(v.split("{")[0]) for v in variants("voice_rejected", "ru"))
    _, events = await stored(running.settings, "tg:1101")
    assert [(e.role, e.source) for e in events] == [("user", "voice"), ("assistant", "voice")] * 2
    assert key_word_share(events[0].content, RU_KEY_WORDS) >= 0.5
