"""The in-process CTranslate2 model: real loading and generation of SmolLM2-135M (int8),
its chat templates, and the fallback chain in front of it."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from adapters.llm.chain import FallbackChain
from adapters.llm.openai_http import LLMSettings, OpenAIChatModel
from engine.errors import LLMUnavailable
from engine.ports import ChatMessage, CompletionRequest
from tests.support.local_model import LOCAL_LLM_EXTRA, require_local_model, require_packages

if TYPE_CHECKING:
    from adapters.llm.ctranslate2_local import CTranslate2ChatModel
from tests.support.openai_server import OpenAIServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REQUEST = CompletionRequest(
    messages=(
        ChatMessage("system", "You are a polite butler. Answer briefly."),
        ChatMessage("user", "Good evening! What should I have for dinner?"),
    ),
    max_tokens=24,
    temperature=0.0,
)


def _ct2() -> ModuleType:
    """The adapter, imported per test: without the extra, collection still succeeds."""
    require_packages(LOCAL_LLM_EXTRA, install="pip install -e '.[local-llm]'")
    return importlib.import_module("adapters.llm.ctranslate2_local")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return require_local_model()


@pytest.fixture
async def local(model_dir: Path):
    ct2 = _ct2()
    model = ct2.CTranslate2ChatModel(ct2.LocalModelSettings(model_dir, threads=2))
    yield model
    await model.close()


async def test_generates_text_within_max_tokens(local: CTranslate2ChatModel, model_dir: Path):
    assert await local.probe() is True
    completion = await local.complete(REQUEST)
    assert completion.text.strip()
    assert "<|im_" not in completion.text  # special tokens are not in the text
    assert completion.model == model_dir.name
    assert completion.endpoint == 0
    assert completion.prompt_tokens > 20
    assert 0 < completion.completion_tokens <= 24
    short = await local.complete(CompletionRequest(REQUEST.messages, max_tokens=3, temperature=0.0))
    assert short.completion_tokens <= 3


async def test_greedy_generation_is_deterministic_and_concurrent_calls_queue(local):
    first, second = await asyncio.gather(local.complete(REQUEST), local.complete(REQUEST))
    assert first.text == second.text


async def test_sampling_with_temperature_answers(local):
    completion = await local.complete(
        CompletionRequest(REQUEST.messages, max_tokens=8, temperature=0.7)
    )
    assert 0 < completion.completion_tokens <= 8


async def test_a_broken_model_directory_is_unavailable(model_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tokenizer.json", "config.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    (broken / "model.bin").write_bytes(b"not a model")
    ct2 = _ct2()
    model = ct2.CTranslate2ChatModel(ct2.LocalModelSettings(broken))
    assert await model.probe() is False
    with pytest.raises(LLMUnavailable, match="local model failed"):
        await model.complete(REQUEST)


async def test_chain_answers_from_the_local_model_when_the_server_is_down(local):
    async with OpenAIServer(mode="down") as server:
        http = OpenAIChatModel(settings=LLMSettings(urls=(server.base_url,), retries=0))
        chain = FallbackChain(http, local, primary_endpoints=1)
        try:
            completion = await chain.complete(REQUEST)
            assert completion.endpoint == 1  # the link after the one HTTP endpoint
            assert completion.text.strip()
            assert await chain.probe() is True  # the chain can answer: no degraded mode
            await server.set_mode("ok")
            upstream = await chain.complete(REQUEST)
            assert upstream.endpoint == 0
            assert upstream.model == "butler-test-model"
        finally:
            await chain.close()


def _folder(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name.replace("_dot_", ".")).write_text(text)
    return tmp_path


MESSAGES = (ChatMessage("system", "S"), ChatMessage("user", "U"))


def test_template_from_a_jinja_file_wins(tmp_path: Path):
    folder = _folder(
        tmp_path,
        chat_template_dot_jinja="{{ bos_token }}{% for m in messages %}[{{ m.role }}]"
        "{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
        tokenizer_config_dot_json=json.dumps({"bos_token": "<s>", "chat_template": "ignored"}),
    )
    assert _ct2().ChatTemplate(folder).render(MESSAGES) == "<s>[system]S[user]U[assistant]"


def test_template_from_tokenizer_config(tmp_path: Path):
    template = "{% for m in messages %}{{ m.content }}|{% endfor %}{{ eos_token }}"
    folder = _folder(
        tmp_path,
        tokenizer_config_dot_json=json.dumps({"eos_token": "</s>", "chat_template": template}),
    )
    assert _ct2().ChatTemplate(folder).render(MESSAGES) == "S|U|</s>"


def test_chatml_when_the_model_ships_no_template(tmp_path: Path):
    rendered = _ct2().ChatTemplate(tmp_path).render(MESSAGES)
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "im_start" in _ct2().CHATML


def test_a_template_may_raise(tmp_path: Path):
    folder = _folder(tmp_path, chat_template_dot_jinja="{{ raise_exception('no system role') }}")
    with pytest.raises(Exception, match="no system role"):
        _ct2().ChatTemplate(folder).render(MESSAGES)
