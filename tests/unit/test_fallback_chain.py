"""`FallbackChain` decisions with scripted models behind the port (the real pair is tested in
tests/integration/test_local_llm.py)."""

from __future__ import annotations

import pytest

from adapters.llm.chain import FallbackChain
from engine.errors import LLMRejected, LLMUnavailable
from engine.ports import ChatMessage, CompletionRequest
from tests.fakes import ScriptedLLM

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest((ChatMessage("user", "hi"),), max_tokens=8)


def _failing(failure: str) -> ScriptedLLM:
    return ScriptedLLM(down=failure == "down", reject=failure == "reject")


def _chain(primary: ScriptedLLM, fallback: ScriptedLLM) -> FallbackChain:
    return FallbackChain(primary, fallback, primary_endpoints=2)


async def test_primary_answers_and_the_fallback_is_not_asked():
    primary, fallback = ScriptedLLM(), ScriptedLLM()
    completion = await _chain(primary, fallback).complete(REQUEST)
    assert completion.endpoint == 0
    assert fallback.calls == []


@pytest.mark.parametrize("failure", ["down", "reject"])
async def test_a_failed_primary_hands_over_with_the_endpoint_counted_on(failure: str):
    primary, fallback = _failing(failure), ScriptedLLM(script=lambda _: "local")
    completion = await _chain(primary, fallback).complete(REQUEST)
    assert (completion.text, completion.endpoint) == ("local", 2)
    assert len(primary.calls) == len(fallback.calls) == 1


@pytest.mark.parametrize(
    ("primary_failure", "error"), [("down", LLMUnavailable), ("reject", LLMRejected)]
)
async def test_when_both_fail_the_primarys_error_is_raised(primary_failure: str, error: type):
    chain = _chain(_failing(primary_failure), ScriptedLLM(down=True))
    with pytest.raises(error):
        await chain.complete(REQUEST)


async def test_probe_is_true_while_any_link_can_answer():
    primary, fallback = ScriptedLLM(down=True), ScriptedLLM()
    chain = _chain(primary, fallback)
    assert await chain.probe() is True
    fallback.down = True
    assert await chain.probe() is False
    primary.down = False
    probes = fallback.probes
    assert await chain.probe() is True
    assert fallback.probes == probes  # the primary answered: the fallback was not asked


async def test_close_closes_links_that_can_close():
    closed: list[str] = []

    class Closable(ScriptedLLM):
        async def close(self) -> None:
            closed.append("x")

    await FallbackChain(Closable(), ScriptedLLM(), primary_endpoints=1).close()
    assert closed == ["x"]
