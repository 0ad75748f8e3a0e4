"""Tokens per second of the in-process fallback model (SmolLM2-135M-Instruct, CTranslate2 int8).

`.venv/bin/python -m bench.local_llm_bench [--runs 5] [--max-tokens 128]`: through
`CTranslate2ChatModel` (worker thread, chat template), greedy, for a short prompt and a prompt
of a realistic size (persona, 20 remembered lines, the message). Prefill is timed with
`max_tokens=1`; decode rate is the remaining tokens over the remaining time. Prints one JSON
line per prompt with medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from adapters.llm.ctranslate2_local import CTranslate2ChatModel, LocalModelSettings
from engine.ports import ChatMessage, CompletionRequest
from tests.support.local_model import MODEL_DIR, build

ROOT = Path(__file__).resolve().parents[1]
PERSONA = (
    "Ты — Alfred-style дворецкий: вежливый, ироничный, заботливый, с английским юмором. "
    "Отвечай по-русски, кратко и по делу, обращайся к хозяину «сэр»."
)


def prompts() -> dict[str, tuple[ChatMessage, ...]]:
    lines = (ROOT / "tests" / "data" / "calibration_ru.txt").read_text().splitlines()
    memory: list[ChatMessage] = []
    for i, line in enumerate(line for line in lines if line.strip()):
        memory.append(ChatMessage("user" if i % 2 == 0 else "assistant", line))
    return {
        "short": (
            ChatMessage("system", PERSONA),
            ChatMessage("user", "Добрый вечер! Что на ужин?"),
        ),
        "realistic": (
            ChatMessage("system", PERSONA + "\nЧто известно о хозяине: любит чай, шахматы, джаз."),
            *memory[:20],
            ChatMessage("user", "Напомните, сэр, о чём мы договорились на завтра?"),
        ),
    }


async def measure(
    model: CTranslate2ChatModel, messages: tuple[ChatMessage, ...], runs: int, max_tokens: int
) -> dict[str, float]:
    prefill, total, produced = [], [], []
    prompt_tokens = 0
    for _ in range(runs):
        started = time.perf_counter()
        first = await model.complete(CompletionRequest(messages, max_tokens=1, temperature=0.0))
        prefill.append(time.perf_counter() - started)
        started = time.perf_counter()
        full = await model.complete(
            CompletionRequest(messages, max_tokens=max_tokens, temperature=0.0)
        )
        total.append(time.perf_counter() - started)
        produced.append(full.completion_tokens)
        prompt_tokens = first.prompt_tokens
    p, t, n = statistics.median(prefill), statistics.median(total), statistics.median(produced)
    return {
        "prompt_tokens": prompt_tokens,
        "output_tokens": n,
        "prefill_s": round(p, 3),
        "total_s": round(t, 3),
        "tokens_per_s": round(n / t, 1),
        "decode_tokens_per_s": round((n - 1) / max(t - p, 1e-9), 1),
        "prefill_tokens_per_s": round(prompt_tokens / p, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="0: CTranslate2 decides")
    args = parser.parse_args()
    path = build(MODEL_DIR)
    model = CTranslate2ChatModel(LocalModelSettings(path, threads=args.threads))
    started = time.perf_counter()
    assert await model.probe()
    load_s = time.perf_counter() - started
    for name, messages in prompts().items():
        await model.complete(CompletionRequest(messages, max_tokens=4, temperature=0.0))  # warm
        row = await measure(model, messages, args.runs, args.max_tokens)
        print(
            json.dumps(
                {
                    "prompt": name,
                    "cpus": os.cpu_count(),
                    "threads": args.threads,
                    "load_s": round(load_s, 3),
                    "runs": args.runs,
                    **row,
                }
            ),
            flush=True,
        )
    await model.close()


if __name__ == "__main__":
    asyncio.run(main())
