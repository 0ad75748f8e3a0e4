"""Speech-to-text speed: the real-time factor (processing seconds / audio seconds) of
`WhisperTranscriber` on ~10 s and ~40 s Russian voice notes (espeak-ng, OGG/Opus like
Telegram's), with the model already loaded; also model load time and first-call latency, and
beam size 1 vs 5, CTranslate2 threads 1 vs 2, and always running language detection (`-detect`).
One JSON line per configuration; `wer` is the word error rate against the spoken text (espeak
is robotic, so it compares configurations, not Whisper). Other processes skew timings: the
load average is printed with the numbers.

Run: .venv/bin/python -m bench.stt_bench [--runs 5] [--configs b1-t2,b5-t2,b1-t1,b1-t2-detect]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from adapters.stt.audio import SAMPLE_RATE, decode
from adapters.stt.config import SttSettings
from adapters.stt.model import ensure_default_model
from adapters.stt.whisper import LazyWhisperModel, WhisperTranscriber
from tests.support import audio


def make_clips(folder: Path) -> dict[str, tuple[bytes, str, float]]:
    """~10 s and ~40 s notes of whole, distinct sentences."""
    clips = {}
    for name, text in (("10s", audio.RU_PARAGRAPH), ("40s", audio.RU_STORY)):
        note = audio.make_voice_note(text, "ru", folder / f"{name}.ogg")
        seconds = len(decode(note, max_seconds=600)) / SAMPLE_RATE
        clips[name] = (note, text, seconds)
    return clips


def parse(config: str) -> tuple[int, int, bool]:
    parts = config.split("-")
    beam, threads = int(parts[0].removeprefix("b")), int(parts[1].removeprefix("t"))
    return beam, threads, "detect" in parts


@dataclass
class Config:
    """One configuration under test, its transcriber and what was measured on it."""

    name: str
    stt: WhisperTranscriber
    result: dict[str, Any]
    times: dict[str, list[float]] = field(default_factory=dict)


async def prepare(name: str, data_dir: Path, first_note: bytes) -> Config:
    """Load a model for `name` (cold) and time its first transcription."""
    beam, threads, detect = parse(name)
    model = LazyWhisperModel("", data_dir=data_dir, threads=threads)
    settings = SttSettings(beam_size=beam, threads=threads)
    stt = WhisperTranscriber(settings, data_dir=data_dir, model=model, detect=detect)
    await stt.load()
    started = time.perf_counter()
    await stt.transcribe(first_note, language_hint="ru")
    first_call = time.perf_counter() - started
    result = {
        "config": name,
        "beam_size": beam,
        "threads": threads,
        "detect": detect,
        "load_s": round(model.load_seconds or 0.0, 3),
        "first_call_s": round(first_call, 3),
    }
    return Config(name, stt, result)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="stt-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        ensure_default_model(folder / "models")
        header = {
            "assemble_s": round(time.perf_counter() - started, 3),
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(header), flush=True)
        clips = make_clips(folder)
        configs = [await prepare(n, folder, clips["10s"][0]) for n in args.configs.split(",")]
        # Runs interleave the configurations, so load from other processes spreads evenly.
        for _ in range(args.runs):
            for config in configs:
                for clip, (note, text, _seconds) in clips.items():
                    started = time.perf_counter()
                    transcript = await config.stt.transcribe(note, language_hint="ru")
                    config.times.setdefault(clip, []).append(time.perf_counter() - started)
                    config.result[f"wer_{clip}"] = round(
                        audio.word_error_rate(text, transcript.text), 2
                    )
        for config in configs:
            for clip, (_note, _text, seconds) in clips.items():
                median = statistics.median(config.times[clip])
                config.result[f"audio_{clip}_s"] = round(seconds, 2)
                config.result[f"median_{clip}_s"] = round(median, 3)
                config.result[f"rtf_{clip}"] = round(median / seconds, 3)
            config.result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(config.result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--configs", default="b1-t2,b5-t2,b1-t1,b1-t2-detect")
    args = parser.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    main()
