"""What speech to text is configured with (filled from `BUTLER_*` by bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SttSettings:
    """Speech to text: which Whisper model, how long a note may be, how much CPU it may take."""

    model: str = ""
    """Empty: the packaged base model; else a model directory, a size name or a hub id."""
    max_seconds: float = 300.0
    concurrency: int = 1
    threads: int = 0
    """CTranslate2 threads per transcription; 0: the CPU count, at most 4."""
    beam_size: int = 1
    wait_s: float = 120.0
    """How long a voice note may wait for a free transcription slot before TranscriberBusy."""
