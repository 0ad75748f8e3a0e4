"""`WhisperTranscriber` with the packaged base model on espeak-ng voice notes, for real."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import anyio
import pytest

from adapters.stt.config import SttSettings
from adapters.stt.whisper import LazyWhisperModel, WhisperTranscriber
from engine.errors import BadAudio, TranscriberBusy
from tests.support import audio

pytestmark = pytest.mark.anyio


def transcriber(model: LazyWhisperModel, **settings: float) -> WhisperTranscriber:
    return WhisperTranscriber(
        SttSettings(**settings),  # type: ignore[arg-type]
        data_dir=model.data_dir,
        model=model,
    )


async def test_a_russian_note_is_transcribed_while_the_loop_runs_on(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes]
) -> None:
    stt = transcriber(whisper_model)
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0.01)  # the event loop's pulse while the worker thread runs

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        started = time.perf_counter()
        result = await stt.transcribe(voice_notes["ru"], language_hint="ru")
        elapsed = time.perf_counter() - started
        done = True
    assert result.language == "ru"
    assert 3.0 < result.duration_s < 8.0
    assert re.search("[а-я]", result.text.lower())
    assert audio.key_word_share(result.text, audio.RU_KEY_WORDS) >= 0.5, result.text
    # A blocked loop would tick about once; a free one ticks ~100 times a second.
    assert ticks >= min(10, elapsed * 10), (ticks, elapsed)


@pytest.mark.parametrize("hint", ["en", "ru"])
async def test_an_english_note_is_transcribed_in_english_whatever_the_hint(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes], hint: str
) -> None:
    result = await transcriber(whisper_model).transcribe(
        voice_notes["en"],
        language_hint=hint,  # type: ignore[arg-type]
    )
    assert result.language == "en"
    assert audio.word_error_rate(audio.EN_NOTE, result.text) <= 0.3, result.text
    assert audio.key_word_share(result.text, audio.EN_KEY_WORDS) >= 0.8


def _truncated(note: bytes) -> bytes:
    return note[: len(note) * 2 // 3]


def _damaged_page(note: bytes) -> bytes:
    middle = note.index(b"OggS", len(note) // 2)
    return note[:middle] + b"XXXX" + note[middle + 4 :]


BAD_INPUTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda note: b"", "empty"),
    "random bytes": (lambda note: random.Random(11).randbytes(4000), "could not be decoded"),
    "text": (lambda note: b"not audio at all\n" * 100, "could not be decoded"),
    "truncated ogg": (_truncated, "cut short"),
    "ogg headers only": (lambda note: note[:120], "cut short"),
    "damaged ogg page": (_damaged_page, "damaged"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_corrupt_audio_is_bad_audio_with_a_reason(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes], case: str
) -> None:
    spoil, reason = BAD_INPUTS[case]
    with pytest.raises(BadAudio, match=reason):
        await transcriber(whisper_model).transcribe(spoil(voice_notes["ru"]), language_hint="ru")


@pytest.mark.parametrize("note", ["silence", "tone"])
async def test_sound_without_speech_is_bad_audio(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes], note: str
) -> None:
    with pytest.raises(BadAudio, match="no speech"):
        await transcriber(whisper_model).transcribe(voice_notes[note], language_hint="ru")


async def test_a_note_over_the_duration_cap_is_refused_before_transcription(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes]
) -> None:
    stt = transcriber(whisper_model, max_seconds=2.0)
    with pytest.raises(BadAudio, match=r"longer than the 2 s"):
        await stt.transcribe(voice_notes["ru"], language_hint="ru")
    assert stt.peak_in_flight == 1


async def test_audio_without_a_declared_length_is_capped_after_decoding(
    whisper_model: LazyWhisperModel, tmp_path
) -> None:
    # WebM written to a pipe carries no duration: only the decoded length can be checked.
    wav = audio.synthesize(audio.EN_NOTE, "en", tmp_path / "en.wav")
    webm = audio.encode_piped_webm(wav)
    stt = transcriber(whisper_model, max_seconds=2.0)
    with pytest.raises(BadAudio, match="longer than"):
        await stt.transcribe(webm, language_hint="en")


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_no_more_transcriptions_run_at_once_than_the_concurrency(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes], concurrency: int
) -> None:
    stt = transcriber(whisper_model, concurrency=concurrency)
    results = []

    async def one() -> None:
        results.append(await stt.transcribe(voice_notes["en"], language_hint="en"))

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(one)
    assert len(results) == 2
    assert stt.peak_in_flight == concurrency
    assert stt.in_flight == 0


async def test_a_note_that_waits_past_the_deadline_gets_busy_and_the_slot_returns(
    whisper_model: LazyWhisperModel, voice_notes: dict[str, bytes]
) -> None:
    stt = transcriber(whisper_model, concurrency=1, wait_s=0.2)
    holder = object()
    await stt.limiter.acquire_on_behalf_of(holder)  # another note is being transcribed
    try:
        with pytest.raises(TranscriberBusy, match="no transcription slot"):
            await stt.transcribe(voice_notes["silence"], language_hint="ru")
    finally:
        stt.limiter.release_on_behalf_of(holder)
    with pytest.raises(BadAudio):  # now it gets the slot (and finds no speech)
        await stt.transcribe(voice_notes["silence"], language_hint="ru")
    assert stt.limiter.borrowed_tokens == 0


@pytest.mark.parametrize(("note", "hint", "language"), [("en", "ru", "en"), ("ru", "ru", "ru")])
async def test_with_detection_a_confident_detection_wins_and_a_weak_one_loses(
    whisper_model: LazyWhisperModel,
    voice_notes: dict[str, bytes],
    note: str,
    hint: str,
    language: str,
) -> None:
    stt = WhisperTranscriber(
        SttSettings(), data_dir=whisper_model.data_dir, model=whisper_model, detect=True
    )
    result = await stt.transcribe(voice_notes[note], language_hint=hint)  # type: ignore[arg-type]
    assert result.language == language
    keys = audio.EN_KEY_WORDS if note == "en" else audio.RU_KEY_WORDS
    assert audio.key_word_share(result.text, keys) >= 0.5, result.text
