"""Shared fixtures: the async backend for anyio's pytest plugin, the Whisper model, voice
notes, a MongoDB-protocol server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.stt.whisper import LazyWhisperModel
from tests.support import audio
from tests.support.secantus import SecantusServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> LazyWhisperModel:
    """The packaged Whisper base model, assembled and loaded once per session (slow: ~3 s)."""
    model = LazyWhisperModel("", data_dir=tmp_path_factory.mktemp("whisper"), workers=2)
    model.get()
    return model


@pytest.fixture(scope="session")
def voice_notes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Telegram-like OGG/Opus notes made with espeak-ng and ffmpeg, once per session."""
    folder = tmp_path_factory.mktemp("voice")
    return {
        "ru": audio.make_voice_note(audio.RU_NOTE, "ru", folder / "ru.ogg"),
        "en": audio.make_voice_note(audio.EN_NOTE, "en", folder / "en.ogg"),
        "silence": audio.make_silence(3.0, folder / "silence.ogg"),
        "tone": audio.make_tone(3.0, folder / "tone.ogg"),
    }


@pytest.fixture(scope="session")
def secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    """One `secantusd-py` for the session; tests keep apart by using fresh database names."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
