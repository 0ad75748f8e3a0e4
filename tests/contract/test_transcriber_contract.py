"""The `Transcriber` port's contract, run against Whisper (real model) and the fake.

Speech comes back as text in its language with the audio's duration; undecodable or
speechless audio is `BadAudio` (permanent) and leaves the transcriber working; no free
capacity within the deadline is `TranscriberBusy` (transient).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from adapters.stt.config import SttSettings
from adapters.stt.whisper import LazyWhisperModel, WhisperTranscriber
from engine.domain import Language
from engine.errors import BadAudio, PermanentError, TranscriberBusy, TransientError
from engine.ports import Transcriber
from tests.fakes import FakeTranscriber
from tests.support import audio

pytestmark = pytest.mark.anyio

WAIT_S = 0.2


@dataclass
class Backend:
    """A transcriber, the inputs it takes as speech, silence and garbage, and `hold`: a
    context that occupies every transcription slot while entered."""

    transcriber: Transcriber
    speech: dict[Language, tuple[bytes, str, tuple[str, ...]]]
    silence: bytes
    hold: Callable[[], AbstractAsyncContextManager[None]]
    garbage: bytes = field(default=b"\x00\x01not audio\xff" * 50)


def whisper_backend(model: LazyWhisperModel, notes: dict[str, bytes]) -> Backend:
    stt = WhisperTranscriber(SttSettings(wait_s=WAIT_S), data_dir=model.data_dir, model=model)

    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        holder = object()
        await stt.limiter.acquire_on_behalf_of(holder)
        try:
            yield
        finally:
            stt.limiter.release_on_behalf_of(holder)

    return Backend(
        stt,
        {
            "ru": (notes["ru"], audio.RU_NOTE, audio.RU_KEY_WORDS),
            "en": (notes["en"], audio.EN_NOTE, audio.EN_KEY_WORDS),
        },
        notes["silence"],
        hold,
    )


def fake_backend() -> Backend:
    fake = FakeTranscriber(capacity=1, wait_s=WAIT_S)

    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        async with fake.slots:
            yield

    return Backend(
        fake,
        {
            "ru": (FakeTranscriber.speech(audio.RU_NOTE, "ru"), audio.RU_NOTE, audio.RU_KEY_WORDS),
            "en": (FakeTranscriber.speech(audio.EN_NOTE, "en"), audio.EN_NOTE, audio.EN_KEY_WORDS),
        },
        FakeTranscriber.speech("   ", "ru"),
        hold,
    )


@pytest.fixture(params=["whisper", "fake"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        return fake_backend()
    model = request.getfixturevalue("whisper_model")
    notes = request.getfixturevalue("voice_notes")
    return whisper_backend(model, notes)


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_speech_comes_back_as_text_in_its_language(
    backend: Backend, language: Language
) -> None:
    note, _text, keys = backend.speech[language]
    result = await backend.transcriber.transcribe(note, language_hint=language)
    assert result.language == language
    assert result.text == result.text.strip() != ""
    assert audio.key_word_share(result.text, keys) >= 0.5, result.text
    assert result.duration_s > 0


async def test_bad_and_silent_audio_are_permanent_and_harmless(backend: Backend) -> None:
    for bad in (b"", backend.garbage, backend.silence):
        with pytest.raises(BadAudio) as caught:
            await backend.transcriber.transcribe(bad, language_hint="ru")
        assert isinstance(caught.value, PermanentError)
        assert str(caught.value)  # the reason the user is told
    note, _text, _keys = backend.speech["en"]
    assert (await backend.transcriber.transcribe(note, language_hint="en")).text


async def test_no_capacity_within_the_deadline_is_transient_busy(backend: Backend) -> None:
    loop = asyncio.get_running_loop()
    async with backend.hold():
        started = loop.time()
        with pytest.raises(TranscriberBusy) as caught:
            await backend.transcriber.transcribe(backend.silence, language_hint="ru")
        assert WAIT_S * 0.9 <= loop.time() - started < WAIT_S + 2.0
    assert isinstance(caught.value, TransientError)
