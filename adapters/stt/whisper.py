"""`WhisperTranscriber`: the `Transcriber` port on faster-whisper (CTranslate2, int8 on CPU).

The model loads on first use, in a worker thread. Each transcription runs in a worker thread
too (decode, VAD, the whole lazy `segments` generator), at most `concurrency` at once; a note
that waits longer than `wait_s` for a slot gets `TranscriberBusy`. No transcript text is
logged or put on spans: only durations, language and its probability.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from opentelemetry import trace

from adapters.stt.config import SttSettings
from adapters.stt.model import ModelUnavailable, check_spec, resolve_model
from engine.domain import Language
from engine.errors import BadAudio, TranscriberBusy
from engine.ports import Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment, TranscriptionInfo

    from adapters.stt.audio import Samples

log = logging.getLogger(__name__)

DETECT_CONFIDENCE = 0.7
"""Whisper's own language detection overrides the profile's language only at or above this
probability (on synthetic or very short speech it spreads ~0.1 over many languages)."""

_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[A-Za-z]")


class LazyWhisperModel:
    """One faster-whisper model, loaded once on first use; shareable between transcribers."""

    def __init__(self, spec: str, *, data_dir: Path, threads: int = 0, workers: int = 1) -> None:
        """Raises:
        ConfigurationError: `spec` names neither a directory nor a known model (checked now,
            cheaply; the model itself loads later).
        """
        check_spec(spec)
        self.spec = spec
        self.data_dir = data_dir
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.workers = workers
        self.load_seconds: float | None = None
        self._model: WhisperModel | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> WhisperModel:
        """The model, loading it first if needed (blocking: call it in a worker thread).

        Raises:
            ModelUnavailable: the model cannot be assembled, found or downloaded.
        """
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._model = self._load()
                self.load_seconds = time.perf_counter() - started
                log.info(
                    "whisper model loaded",
                    extra={"seconds": round(self.load_seconds, 3), "threads": self.threads},
                )
        return self._model

    def _load(self) -> WhisperModel:
        from faster_whisper import WhisperModel

        try:
            where = resolve_model(self.spec, self.data_dir)
        except OSError as exc:  # the data directory cannot be written: full, read-only
            raise ModelUnavailable(
                f"cannot assemble the Whisper model in {self.data_dir / 'models'}: {exc}"
            ) from exc
        try:
            return WhisperModel(
                where,
                device="cpu",
                compute_type="int8",
                cpu_threads=self.threads,
                num_workers=self.workers,
                download_root=str(self.data_dir / "models" / "hub"),
            )
        except (OSError, RuntimeError, ValueError) as exc:
            # huggingface_hub's offline and HTTP errors are OSError/ValueError subclasses;
            # CTranslate2 raises RuntimeError for a directory that holds no valid model.
            raise ModelUnavailable(_unavailable(self.spec, where, exc)) from exc


def _unavailable(spec: str, where: str, exc: Exception) -> str:
    if Path(where).is_dir():
        return f"BUTLER_WHISPER_MODEL: {where} is not a CTranslate2 Whisper model ({exc})"
    return (
        f"BUTLER_WHISPER_MODEL={spec!r} must be downloaded from the Hugging Face hub, which "
        f"failed ({type(exc).__name__}); offline, point it at a converted model directory"
    )


@dataclass(frozen=True, slots=True)
class _Result:
    transcript: Transcript
    speech_s: float
    probability: float
    detected: bool
    seconds: float


class WhisperTranscriber:
    """Speech to text with faster-whisper, bounded in concurrency and in waiting time."""

    def __init__(
        self,
        settings: SttSettings,
        *,
        data_dir: Path,
        model: LazyWhisperModel | None = None,
        detect: bool = False,
    ) -> None:
        """Args:
            settings: model, duration cap, concurrency, threads, beam size, wait deadline.
            data_dir: where the packaged model is assembled (`<data_dir>/models/`).
            model: a model to share (tests, benchmarks); by default one built from settings.
            detect: always run Whisper's language detection first (one more encoder pass);
                by default it runs only when the hint gave no words (see `_run`).

        Raises:
            ConfigurationError: `settings.model` names neither a directory nor a known model.
        """
        self.settings = settings
        self.model = model or LazyWhisperModel(
            settings.model,
            data_dir=data_dir,
            threads=settings.threads,
            workers=settings.concurrency,
        )
        self.detect = detect
        self.limiter = anyio.CapacityLimiter(settings.concurrency)
        self.in_flight = 0
        self.peak_in_flight = 0
        self._count_lock = threading.Lock()

    async def load(self) -> None:
        """Load the model now (at startup, to fail early) instead of on the first voice note.

        Raises:
            ModelUnavailable: the model cannot be assembled, found or downloaded.
        """
        await anyio.to_thread.run_sync(self.model.get)

    async def transcribe(self, audio: bytes, *, language_hint: Language) -> Transcript:
        """Raises:
        BadAudio: undecodable, cut short, silent (no speech after VAD) or too long audio.
        TranscriberBusy: no transcription slot came free within `wait_s`.
        ModelUnavailable: the model cannot be loaded (a configuration problem).
        """
        borrower = object()
        try:
            with anyio.fail_after(self.settings.wait_s):
                await self.limiter.acquire_on_behalf_of(borrower)
        except TimeoutError as exc:
            raise TranscriberBusy(
                f"no transcription slot free within {self.settings.wait_s:.0f} s"
            ) from exc
        try:
            # Not cancellable: the thread runs on anyway, so the slot is held until it ends.
            result = await anyio.to_thread.run_sync(self._work, audio, language_hint)
        finally:
            self.limiter.release_on_behalf_of(borrower)
        transcript = result.transcript
        trace.get_current_span().set_attributes(
            {
                "butler.stt.audio_seconds": round(transcript.duration_s, 3),
                "butler.stt.speech_seconds": round(result.speech_s, 3),
                "butler.stt.seconds": round(result.seconds, 3),
                "butler.stt.language": transcript.language,
                "butler.stt.language_probability": round(result.probability, 3),
                "butler.stt.language_detected": result.detected,
            }
        )
        return transcript

    # -- in the worker thread ----------------------------------------------------------------

    def _work(self, audio: bytes, hint: Language) -> _Result:
        with self._count_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return self._run(audio, hint)
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def _run(self, audio: bytes, hint: Language) -> _Result:
        from adapters.stt.audio import SAMPLE_RATE, decode, speech_seconds

        started = time.perf_counter()
        samples = decode(audio, max_seconds=self.settings.max_seconds)
        if speech_seconds(samples) == 0.0:  # before the model: silence costs no encoder pass
            raise BadAudio("I hear no speech in it", "silent")
        model = self.model.get()
        text, info = self._decode(model, samples, hint)
        if not text and not self.detect:
            # The hint gave nothing although VAD heard speech: it may be the wrong language.
            text, info = self._redecode_detected(model, samples, hint)
        if not text:
            raise BadAudio("I could not make out any words", "unclear")
        duration = len(samples) / SAMPLE_RATE
        seconds = time.perf_counter() - started
        log.info(
            "voice note transcribed",
            extra={
                "audio_seconds": round(duration, 2),
                "speech_seconds": round(info.duration_after_vad, 2),
                "seconds": round(seconds, 3),
                "language": info.language,
                "language_probability": round(info.language_probability, 3),
            },
        )
        return _Result(
            Transcript(text, _language(text, info.language), duration),
            info.duration_after_vad,
            info.language_probability,
            info.all_language_probs is not None,
            seconds,
        )

    def _decode(
        self, model: WhisperModel, samples: Samples, hint: Language
    ) -> tuple[str, TranscriptionInfo]:
        """Transcribe in the hint's language, or (with `detect`) in the detected one unless the
        detection is weak."""
        segments, info = self._start(model, samples, None if self.detect else hint)
        if info.language != hint and info.language_probability < DETECT_CONFIDENCE:
            # The first generator has not run yet, so dropping it costs nothing.
            segments, info = self._start(model, samples, hint)
        return _drain(segments), info  # the lazy generator runs here, in the worker thread

    def _redecode_detected(
        self, model: WhisperModel, samples: Samples, hint: Language
    ) -> tuple[str, TranscriptionInfo]:
        """Transcribe in the detected language if Whisper is sure it is not the hint's."""
        segments, info = self._start(model, samples, None)
        if info.language == hint or info.language_probability < DETECT_CONFIDENCE:
            return "", info
        return _drain(segments), info

    def _start(
        self, model: WhisperModel, samples: Samples, language: str | None
    ) -> tuple[Iterable[Segment], TranscriptionInfo]:
        started: tuple[Iterable[Segment], TranscriptionInfo] = model.transcribe(
            samples,
            language=language,
            beam_size=self.settings.beam_size,
            vad_filter=True,
            # Each window decodes on its own: a misheard window cannot seed a repetition loop
            # in the next (voice notes are short; little context is lost).
            condition_on_previous_text=False,
        )
        return started


def _language(text: str, decoded_as: str) -> str:
    """The language of the text as written: under a Russian language token Whisper still
    writes English speech in English, so the script, not the token, tells ru from en."""
    if decoded_as not in ("ru", "en"):
        return decoded_as
    cyrillic, latin = len(_CYRILLIC.findall(text)), len(_LATIN.findall(text))
    if cyrillic == latin:
        return decoded_as
    return "ru" if cyrillic > latin else "en"


def _drain(segments: Iterable[Segment]) -> str:
    return " ".join(part for s in segments if (part := s.text.strip()))
