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
from pathlib import Path
from typing import Any

import anyio

from adapters.settings import SttSettings
from adapters.stt.audio import SAMPLE_RATE, decode
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


async def measure(
    config: str, data_dir: Path, clips: dict[str, tuple[bytes, str, float]], runs: int
) -> dict[str, Any]:
    beam, threads, detect = parse(config)
    model = LazyWhisperModel("", data_dir=data_dir, threads=threads)
    stt = WhisperTranscriber(
        SttSettings(beam_size=beam, threads=threads), data_dir=data_dir, model=model, detect=detect
    )
    await stt.load()
    note10 = clips["10s"][0]
    started = time.perf_counter()
    await stt.transcribe(note10, language_hint="ru")
    first_call = time.perf_counter() - started
    result: dict[str, Any] = {
        "config": config,
        "beam_size": beam,
        "threads": threads,
        "detect": detect,
        "load_s": round(model.load_seconds or 0.0, 3),
        "first_call_s": round(first_call, 3),
    }
    for name, (note, text, seconds) in clips.items():
        times, wer = [], 0.0
        for _ in range(runs):
            started = time.perf_counter()
            transcript = await stt.transcribe(note, language_hint="ru")
            times.append(time.perf_counter() - started)
            wer = audio.word_error_rate(text, transcript.text)
        median = statistics.median(times)
        result[f"audio_{name}_s"] = round(seconds, 2)
        result[f"median_{name}_s"] = round(median, 3)
        result[f"rtf_{name}"] = round(median / seconds, 3)
        result[f"wer_{name}"] = round(wer, 2)
    return result


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="stt-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        ensure_default_model(folder / "models")
        print(
            json.dumps(
                {
                    "assemble_s": round(time.perf_counter() - started, 3),
                    "cpus": os.cpu_count(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                }
            ),
            flush=True,
        )
        clips = make_clips(folder)
        for config in args.configs.split(","):
            result = await measure(config, folder, clips, args.runs)
            result["loadavg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--configs", default="b1-t2,b5-t2,b1-t1,b1-t2-detect")
    args = parser.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    main()
