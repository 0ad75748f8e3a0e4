"""Audio bytes to 16 kHz mono samples, with every way that can fail mapped to `BadAudio`.

Decoding is faster-whisper's own (PyAV, FFmpeg's libraries in the wheel: no ffmpeg binary).
An Ogg file (what Telegram voice notes are) is first checked page by page, so a download cut
short is refused instead of being transcribed as if the user had stopped mid-sentence.
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import numpy.typing as npt
from faster_whisper import decode_audio
from faster_whisper.vad import VadOptions, get_speech_timestamps

from engine.errors import BadAudio

SAMPLE_RATE = 16_000
_OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, n
_OGG_EOS = 0x04

Samples = npt.NDArray[np.float32]


def decode(audio: bytes, *, max_seconds: float) -> Samples:
    """Decode `audio` (any container and codec FFmpeg reads) to float32 samples at 16 kHz.

    Raises:
        BadAudio: empty, undecodable, cut short, soundless, or longer than `max_seconds`.
    """
    if not audio:
        raise BadAudio("the recording is empty", "empty")
    if audio.startswith(b"OggS"):
        check_ogg(audio)
    try:
        declared = _declared_seconds(audio)
        if declared is not None and declared > max_seconds + 1.0:
            raise BadAudio(_too_long(declared, max_seconds), "too_long")
        samples: Samples = decode_audio(io.BytesIO(audio), sampling_rate=SAMPLE_RATE)
    except (av.error.FFmpegError, IndexError) as exc:  # IndexError: no audio stream to decode
        raise BadAudio("the recording could not be decoded", "corrupt") from exc
    seconds = len(samples) / SAMPLE_RATE
    if seconds == 0.0:
        raise BadAudio("the recording holds no sound", "silent")
    if seconds > max_seconds:  # the container may understate its length
        raise BadAudio(_too_long(seconds, max_seconds), "too_long")
    return samples


def speech_seconds(samples: Samples) -> float:
    """Seconds of speech Silero VAD finds (with faster-whisper's default VAD options)."""
    chunks = get_speech_timestamps(samples, VadOptions(), sampling_rate=SAMPLE_RATE)
    return float(sum(c["end"] - c["start"] for c in chunks) / SAMPLE_RATE)


def _too_long(seconds: float, max_seconds: float) -> str:
    return f"it lasts {seconds:.0f} s, longer than the {max_seconds:.0f} s I can take"


def _declared_seconds(audio: bytes) -> float | None:
    """The container's own idea of the length, read without decoding (None if it has none)."""
    with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise BadAudio("the file holds no audio", "corrupt")
        if container.duration is None:
            return None
        return float(container.duration / av.time_base)


def check_ogg(data: bytes) -> None:
    """Walk the Ogg pages: each must be whole and the last must close its stream.

    Raises:
        BadAudio: a page is damaged or missing (the file was cut short or corrupted).
    """
    pos, flags = 0, 0
    size = len(data)
    while pos < size:
        if size - pos < _OGG_HEADER.size:
            raise BadAudio("the recording was cut short", "cut_short")
        capture, _version, flags, _granule, _serial, _seq, _crc, segments = _OGG_HEADER.unpack_from(
            data, pos
        )
        if capture != b"OggS":
            raise BadAudio("the recording is damaged", "corrupt")
        body_at = pos + _OGG_HEADER.size + segments
        if body_at > size:
            raise BadAudio("the recording was cut short", "cut_short")
        pos = body_at + sum(data[pos + _OGG_HEADER.size : body_at])
        if pos > size:
            raise BadAudio("the recording was cut short", "cut_short")
    if not flags & _OGG_EOS:
        raise BadAudio("the recording was cut short", "cut_short")
