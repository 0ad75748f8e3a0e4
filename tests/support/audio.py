"""Voice notes for tests and benchmarks: speech from espeak-ng, encoded like Telegram's.

Telegram voice notes are OGG/Opus, mono, 48 kHz; `make_voice_note` produces the same with
ffmpeg's libopus. espeak-ng is robotic (Whisper base mishears some Russian words), so compare
transcripts with `key_word_share` or `word_error_rate`, not for equality.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from engine.domain import Language
from tests.support.tools import require

RU_NOTE = "Спасибо большое, до свидания. Сегодня хорошая погода."
RU_KEY_WORDS = ("спасибо", "большое", "свидания", "сегодня", "хорошая", "погода")
EN_NOTE = "Good evening. Please remind me to buy milk and bread tomorrow."
EN_KEY_WORDS = ("evening", "remind", "milk", "bread", "tomorrow")

RU_PARAGRAPH = (
    "Спасибо большое, до свидания. Сегодня хорошая погода. "
    "Мне нужна новая работа. Хорошо, спасибо, до завтра. "
)
"""About 10 s of sentences espeak-ng says clearly enough for Whisper base."""

RU_STORY = RU_PARAGRAPH + (
    "Утром я пил чай и читал газету. Потом мы поехали на работу на машине. "
    "Вечером будет концерт в большом зале. Купите, пожалуйста, хлеб и молоко. "
    "В субботу мы пойдём в парк гулять с собакой. Мой брат живёт в другом городе. "
    "Завтра у меня встреча в десять часов. Напомните мне позвонить доктору. "
    "Летом мы поедем на море отдыхать. Зимой здесь очень холодно и много снега. "
    "Эта книга очень интересная, прочитайте её. Сколько стоит билет на поезд? "
)
"""About 40 s of distinct sentences (repeating one text makes Whisper suspect a loop and
decode it again at higher temperatures)."""

ESPEAK_SPEED = 130  # words per minute: slower than espeak's 175 default, clearer for Whisper


def synthesize(text: str, language: Language, wav: Path) -> Path:
    """Speak `text` into a WAV file with espeak-ng's voice for `language`."""
    espeak = require("espeak-ng")
    subprocess.run(
        [espeak, "-v", language, "-s", str(ESPEAK_SPEED), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    return wav


def encode_voice(source: Path, ogg: Path, *, seconds: float | None = None) -> bytes:
    """Encode `source` (any audio FFmpeg reads, or a lavfi graph) as a Telegram-like voice note."""
    ffmpeg = require("ffmpeg")
    if source.suffix == ".lavfi":
        inputs = ["-f", "lavfi", "-i", source.stem]
    else:
        inputs = ["-i", str(source)]
    limit = ["-t", str(seconds)] if seconds is not None else []
    opus = ("-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k", "-application", "voip")
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y", *inputs, *limit, *opus, str(ogg)],
        check=True,
        capture_output=True,
    )
    return ogg.read_bytes()


WEBM_TO_PIPE = ("-c:a", "libopus", "-f", "webm", "pipe:1")


def encode_piped_webm(source: Path) -> bytes:
    """Opus in WebM written to a pipe: a container that does not declare its length."""
    ffmpeg = require("ffmpeg")
    done = subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(source), *WEBM_TO_PIPE],
        check=True,
        capture_output=True,
    )
    return done.stdout


def make_voice_note(text: str, language: Language, path: Path) -> bytes:
    """An OGG/Opus voice note of `text` spoken by espeak-ng at `path`; returns its bytes."""
    wav = synthesize(text, language, path.with_suffix(".wav"))
    return encode_voice(wav, path)


def make_silence(seconds: float, path: Path) -> bytes:
    """A voice note holding nothing but digital silence."""
    return encode_voice(Path("anullsrc=r=48000:cl=mono.lavfi"), path, seconds=seconds)


def make_tone(seconds: float, path: Path) -> bytes:
    """A voice note holding a steady 440 Hz tone (sound, but no speech)."""
    return encode_voice(Path("sine=frequency=440:sample_rate=48000.lavfi"), path, seconds=seconds)


def words(text: str) -> list[str]:
    """Lower-case words with punctuation dropped and ё read as е."""
    return re.findall(r"[\w']+", text.lower().replace("ё", "е"))


def key_word_share(transcript: str, key_words: Sequence[str], *, stem: int = 5) -> float:
    """The share of `key_words` found in `transcript`, comparing the first `stem` letters
    (Russian endings are where a robotic voice goes wrong most)."""
    heard = {w[:stem] for w in words(transcript)}
    return sum(k[:stem] in heard for k in key_words) / len(key_words)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / max(1, len(ref))
