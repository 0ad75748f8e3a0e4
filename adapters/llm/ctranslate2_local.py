"""`CTranslate2ChatModel`: the LanguageModel port over a CTranslate2 model in this process.

The last link of the fallback chain, before the canned degraded line. The model directory
holds `model.bin` (from `ct2-transformers-converter --quantization int8`), the model's
`tokenizer.json`, and its chat template (`chat_template.jinja`, or `chat_template` in
`tokenizer_config.json`; ChatML when neither is there). Generation runs in a worker thread,
one at a time; the model loads on first use.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import ctranslate2
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from tokenizers import Tokenizer

from engine.errors import LLMUnavailable
from engine.ports import ChatMessage, Completion, CompletionRequest

log = logging.getLogger(__name__)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Used when the model directory ships no chat template (SmolLM2, Qwen and others use it)."""


@dataclass(frozen=True, slots=True)
class LocalModelSettings:
    """Where the model is and how to run it; `threads` 0 lets CTranslate2 choose."""

    path: Path
    threads: int = 0
    compute_type: str = "int8"
    top_k: int = 40
    repetition_penalty: float = 1.1


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """The model's own chat template, rendered in a sandbox as Hugging Face does."""

    def __init__(self, folder: Path) -> None:
        source, special = _template_source(folder)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source)
        self._special = special

    def render(self, messages: tuple[ChatMessage, ...]) -> str:
        return self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            **self._special,
        )


def _template_source(folder: Path) -> tuple[str, dict[str, str]]:
    special: dict[str, str] = {}
    config_path = folder / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("bos_token", "eos_token"):
            value = config.get(key)
            if isinstance(value, str):
                special[key] = value
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), special
    template = config.get("chat_template")
    if isinstance(template, str) and template:
        return template, special
    return CHATML, special


class CTranslate2ChatModel:
    """A `LanguageModel` that generates with `ctranslate2.Generator` on the CPU."""

    def __init__(self, settings: LocalModelSettings) -> None:
        self._settings = settings
        self._name = settings.path.name
        self._limiter = anyio.CapacityLimiter(1)
        self._load_lock = threading.Lock()
        self._generator: ctranslate2.Generator | None = None
        self._tokenizer = Tokenizer.from_file(str(settings.path / "tokenizer.json"))
        self._template = ChatTemplate(settings.path)

    async def complete(self, request: CompletionRequest) -> Completion:
        """Generate up to `request.max_tokens` tokens in a worker thread, one call at a time.

        Raises:
            LLMUnavailable: the model could not be loaded or generation failed.
        """
        prompt = self._template.render(request.messages)
        tokens = self._tokenizer.encode(prompt, add_special_tokens=False).tokens
        # In process: an INTERNAL span, otherwise as the GenAI conventions describe a call.
        tracer = trace.get_tracer("butler.llm")
        with tracer.start_as_current_span(f"chat {self._name}", kind=SpanKind.INTERNAL) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "ctranslate2",
                    "gen_ai.request.model": self._name,
                    "gen_ai.request.max_tokens": request.max_tokens,
                }
            )
            try:
                output = await anyio.to_thread.run_sync(
                    self._generate, tokens, request, limiter=self._limiter
                )
            except (RuntimeError, ValueError, OSError) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                raise LLMUnavailable(f"local model failed: {type(exc).__name__}") from exc
            span.set_attributes(
                {
                    "gen_ai.response.model": self._name,
                    "gen_ai.usage.input_tokens": len(tokens),
                    "gen_ai.usage.output_tokens": len(output),
                }
            )
        text = self._tokenizer.decode(output, skip_special_tokens=True).strip()
        return Completion(text, self._name, 0, len(tokens), len(output))

    async def probe(self) -> bool:
        """Whether the model loads (it stays loaded); never raises but for cancellation."""
        try:
            await anyio.to_thread.run_sync(self._load, limiter=self._limiter)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("local model does not load: %s", type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        self._generator = None

    def _load(self) -> ctranslate2.Generator:
        with self._load_lock:
            if self._generator is None:
                s = self._settings
                self._generator = ctranslate2.Generator(
                    str(s.path), device="cpu", compute_type=s.compute_type, intra_threads=s.threads
                )
            return self._generator

    def _generate(self, tokens: list[str], request: CompletionRequest) -> list[int]:
        generator = self._load()
        s = self._settings
        greedy = request.temperature <= 0
        (result,) = generator.generate_batch(
            [tokens],
            max_length=request.max_tokens,
            sampling_topk=1 if greedy else s.top_k,
            sampling_temperature=max(request.temperature, 1e-3),
            repetition_penalty=s.repetition_penalty,
            include_prompt_in_result=False,
        )
        ids: list[int] = result.sequences_ids[0]
        return ids
