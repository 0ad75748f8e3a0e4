"""The `LanguageModel` port's contract, run against the HTTP adapter (over a real OpenAI-style
server on 127.0.0.1) and against the scripted fake the actor tests rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from adapters.llm.openai_http import LLMSettings, OpenAIChatModel
from engine.errors import LLMUnavailable
from engine.ports import ChatMessage, CompletionRequest, LanguageModel
from tests.fakes import ScriptedLLM
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(
    messages=(ChatMessage("system", "Ты — дворецкий."), ChatMessage("user", "Добрый вечер")),
    max_tokens=32,
)


@dataclass
class Subject:
    """A model under test plus a switch that makes it unreachable or brings it back."""

    model: LanguageModel
    set_down: Callable[[bool], Awaitable[None]]


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture(params=["openai_http", "scripted"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "scripted":
        fake = ScriptedLLM()

        async def fake_down(down: bool) -> None:
            fake.down = down

        yield Subject(fake, fake_down)
        return
    async with OpenAIServer() as server:
        settings = LLMSettings(urls=(server.base_url,), model="", retries=1)
        async with OpenAIChatModel(settings=settings, sleep=_no_sleep) as model:

            async def http_down(down: bool) -> None:
                await server.set_mode("down" if down else "ok")

            yield Subject(model, http_down)


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
