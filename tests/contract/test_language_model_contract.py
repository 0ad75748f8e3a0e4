"""The `LanguageModel` port's contract, run against every model Butler can run on: the HTTP
adapter (over a real OpenAI-style server on 127.0.0.1), the in-process CTranslate2 model
(SmolLM2-135M, converted once per session), the fallback chain of the two, and the scripted
fake the actor tests rely on.

Down means what it means in production: the HTTP server stops listening; the local model's
files are gone (it is unloaded with `close` and its directory link removed, so the next load
fails); the chain is down when both of its links are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adapters.llm.chain import FallbackChain
from adapters.llm.openai_http import LLMSettings, OpenAIChatModel
from engine.errors import LLMUnavailable
from engine.ports import ChatMessage, CompletionRequest, LanguageModel
from tests.fakes import ScriptedLLM
from tests.support.local_model import require_local_model
from tests.support.openai_server import OpenAIServer

if TYPE_CHECKING:
    from adapters.llm.ctranslate2_local import CTranslate2ChatModel

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(
    messages=(ChatMessage("system", "Ты — дворецкий."), ChatMessage("user", "Добрый вечер")),
    max_tokens=32,
    temperature=0.0,  # greedy: the local model answers the same every run
)

SetDown = Callable[[bool], Awaitable[None]]


@dataclass
class Subject:
    """A model under test plus a switch that makes it unreachable or brings it back."""

    model: LanguageModel
    set_down: SetDown


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="session")
def local_model_dir() -> Path:
    """The converted SmolLM2 model (built on first use, cached in `.butler/models/`); fails
    under CI when the local-model extra is missing, skips elsewhere."""
    return require_local_model()


@dataclass
class LocalModel:
    """A CTranslate2 model loaded through a link to the converted model's directory."""

    model: CTranslate2ChatModel
    link: Path
    target: Path

    async def set_down(self, down: bool) -> None:
        if down:
            await self.model.close()  # unload, so the next call must find the files again
            self.link.unlink()
        else:
            self.link.symlink_to(self.target, target_is_directory=True)


def _local(model_dir: Path, folder: Path) -> LocalModel:
    from adapters.llm.ctranslate2_local import (  # noqa: PLC0415 - the local-llm extra
        CTranslate2ChatModel,
        LocalModelSettings,
    )

    link = folder / model_dir.name
    link.symlink_to(model_dir, target_is_directory=True)
    model = CTranslate2ChatModel(LocalModelSettings(link, threads=2))
    return LocalModel(model, link, model_dir)


async def _http(stack: AsyncExitStack) -> tuple[OpenAIChatModel, SetDown]:
    server = await stack.enter_async_context(OpenAIServer())
    settings = LLMSettings(urls=(server.base_url,), model="", retries=1)
    model = await stack.enter_async_context(OpenAIChatModel(settings=settings, sleep=_no_sleep))

    async def set_down(down: bool) -> None:
        await server.set_mode("down" if down else "ok")

    return model, set_down


async def _subject(
    name: str, request: pytest.FixtureRequest, folder: Path, stack: AsyncExitStack
) -> Subject:
    if name == "scripted":
        fake = ScriptedLLM()

        async def fake_down(down: bool) -> None:
            fake.down = down

        return Subject(fake, fake_down)
    if name == "openai_http":
        return Subject(*await _http(stack))
    local = _local(request.getfixturevalue("local_model_dir"), folder)
    stack.push_async_callback(local.model.close)
    if name == "ctranslate2_local":
        return Subject(local.model, local.set_down)
    http, http_down = await _http(stack)
    chain = FallbackChain(http, local.model, primary_endpoints=1)

    async def chain_down(down: bool) -> None:
        await http_down(down)
        await local.set_down(down)

    return Subject(chain, chain_down)


@pytest.fixture(params=["ctranslate2_local", "fallback_chain", "openai_http", "scripted"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    async with AsyncExitStack() as stack:
        yield await _subject(request.param, request, tmp_path, stack)


async def test_complete_answers_with_text_and_usage(subject: Subject) -> None:
    completion = await subject.model.complete(REQUEST)
    assert completion.text.strip()
    assert completion.endpoint == 0
    assert completion.prompt_tokens >= 0
    assert completion.completion_tokens >= 0


async def test_unreachable_model_raises_llm_unavailable(subject: Subject) -> None:
    await subject.set_down(True)
    with pytest.raises(LLMUnavailable):
        await subject.model.complete(REQUEST)


async def test_probe_follows_availability(subject: Subject) -> None:
    assert await subject.model.probe() is True
    await subject.set_down(True)
    assert await subject.model.probe() is False
    await subject.set_down(False)
    assert await subject.model.probe() is True
    assert (await subject.model.complete(REQUEST)).text
