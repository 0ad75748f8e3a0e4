"""OpenAIChatModel against a real local OpenAI-style HTTP server: retries, fallback, mapping."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.llm import LLMSettings, OpenAIChatModel
from engine.errors import LLMRejected, LLMUnavailable
from engine.ports import ChatMessage, CompletionRequest
from tests.support.openai_server import OpenAIServer, default_reply, persona_marker

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PERSONA = "You are Alfred, a discreet English butler.\nAddress the user as sir."
SECRET_TEXT = "my bank pin is 4321"


class RecordingSleep:
    """Backoff without waiting: remembers each requested delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def request(text: str = "Good evening", *, max_tokens: int = 64) -> CompletionRequest:
    return CompletionRequest(
        messages=(ChatMessage("system", PERSONA), ChatMessage("user", text)),
        max_tokens=max_tokens,
        temperature=0.3,
    )


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer() as s:
        yield s


@pytest.fixture
async def backup() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer(model="backup-model") as s:
        yield s


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_model(sleep: RecordingSleep) -> AsyncIterator[Callable[..., OpenAIChatModel]]:
    """Build adapters over the given servers (backoff recorded, jitter at its ceiling).

    The model is named unless a test asks otherwise, so that no `/models` lookup comes first.
    """
    made: list[OpenAIChatModel] = []

    def make(*servers: OpenAIServer, **overrides: Any) -> OpenAIChatModel:
        overrides.setdefault("model", "alfred")
        settings = LLMSettings(urls=tuple(s.base_url for s in servers), **overrides)
        model = OpenAIChatModel(settings=settings, sleep=sleep, random=lambda: 1.0)
        made.append(model)
        return model

    yield make
    for model in made:
        await model.close()


async def test_success_maps_text_model_endpoint_and_usage(
    server: OpenAIServer, make_model: Any
) -> None:
    server.reply = lambda messages: "  Very good, sir.  \n"
    llm = make_model(server, model="alfred-7b")

    done = await llm.complete(request("Hello there friend"))

    assert done.text == "Very good, sir."
    assert done.model == "butler-test-model"  # what the server says answered
    assert done.endpoint == 0
    assert done.prompt_tokens == len(PERSONA.split()) + 3
    assert done.completion_tokens == 3
    body = server.requests[0]
    assert body["model"] == "alfred-7b"
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.3
    assert body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": "Hello there friend"},
    ]


async def test_usage_absent_maps_to_zero_and_model_to_configured(
    server: OpenAIServer, make_model: Any
) -> None:
    server.usage = False
    server.model = ""  # the server names no model

    done = await make_model(server, model="configured").complete(request())

    assert (done.prompt_tokens, done.completion_tokens) == (0, 0)
    assert done.model == "configured"


async def test_persona_arrives_as_system_prompt(server: OpenAIServer, make_model: Any) -> None:
    llm = make_model(server)

    done = await llm.complete(request("Fetch my coat"))

    assert server.system_prompts() == [PERSONA]
    assert persona_marker(PERSONA) in done.text
    assert done.text == default_reply(server.requests[0]["messages"])


async def test_empty_model_setting_sends_the_servers_first_model(
    server: OpenAIServer, make_model: Any
) -> None:
    llm = make_model(server, model="")

    await llm.complete(request())
    await llm.complete(request())

    assert [b["model"] for b in server.requests] == ["butler-test-model"] * 2
    assert server.model_hits == 1  # resolved once, then cached


async def test_empty_model_setting_without_models_endpoint_sends_default(make_model: Any) -> None:
    async with OpenAIServer(serve_models=False) as s:
        await make_model(s, model="").complete(request())
    assert s.requests[0]["model"] == "default"


async def test_model_lookup_failure_is_retried_like_the_completion(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    await server.set_mode("error503")  # /models and chat alike

    done = await make_model(server, backup, model="", retries=1).complete(request())

    assert done.endpoint == 1
    assert server.model_hits == 2
    assert server.hits == 0
    assert len(sleep.delays) == 1
    assert backup.requests[0]["model"] == "backup-model"


async def test_api_key_sent_as_bearer_and_kept_out_of_repr(
    server: OpenAIServer, make_model: Any
) -> None:
    llm = make_model(server, api_key="sk-very-secret")

    await llm.complete(request())

    assert server.authorizations == ["Bearer sk-very-secret"]
    assert "sk-very-secret" not in repr(LLMSettings(urls=("x",), api_key="sk-very-secret"))


async def test_500_is_retried_with_backoff_then_succeeds(
    server: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.script("error500", "error503")
    llm = make_model(server, retries=2, backoff_base_s=0.25)

    done = await llm.complete(request())

    assert done.endpoint == 0
    assert server.hits == 3
    assert sleep.delays == [0.25, 0.5]  # full jitter with random() == 1.0: the ceiling


async def test_backoff_ceiling_is_capped(
    server: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.mode = "error502"
    llm = make_model(server, retries=4, backoff_base_s=1.0, backoff_cap_s=3.0)

    with pytest.raises(LLMUnavailable):
        await llm.complete(request())

    assert sleep.delays == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("mode", ["error400", "error422"])
async def test_bad_request_is_rejected_without_retry_or_fallback(
    mode: str, server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.mode = mode
    llm = make_model(server, backup)

    with pytest.raises(LLMRejected, match=r"endpoint 0.*status 4\d\d"):
        await llm.complete(request(SECRET_TEXT))

    assert server.hits == 1
    assert backup.hits == 0
    assert sleep.delays == []


@pytest.mark.parametrize("mode", ["error401", "error403", "error404"])
async def test_endpoint_refusal_moves_down_the_chain_at_once(
    mode: str, server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.mode = mode
    llm = make_model(server, backup)

    done = await llm.complete(request())

    assert done.endpoint == 1
    assert done.model == "backup-model"
    assert server.hits == 1
    assert sleep.delays == []


async def test_every_endpoint_refusing_is_a_rejection(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any
) -> None:
    server.mode = "error401"
    backup.mode = "error404"

    with pytest.raises(LLMRejected, match="status 404"):
        await make_model(server, backup).complete(request())


async def test_malformed_json_is_retried_then_next_endpoint(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.mode = "malformed"
    llm = make_model(server, backup, retries=2)

    done = await llm.complete(request())

    assert done.endpoint == 1
    assert server.hits == 3
    assert backup.hits == 1
    assert len(sleep.delays) == 2


async def test_missing_content_is_a_bad_response(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any
) -> None:
    server.reply = lambda messages: None  # type: ignore[assignment,return-value]
    llm = make_model(server, backup, retries=0)

    done = await llm.complete(request())

    assert done.endpoint == 1
    assert server.hits == 1


async def test_dropped_connection_is_retried(
    server: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.script("drop")
    llm = make_model(server)

    done = await llm.complete(request())

    assert done.endpoint == 0
    assert server.hits == 2
    assert len(sleep.delays) == 1


async def test_read_timeout_is_retried_then_falls_back(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    await server.set_mode("slow")  # never released: only the read timeout ends a request
    llm = make_model(server, backup, retries=1, read_timeout_s=0.2)

    done = await llm.complete(request())

    assert done.endpoint == 1
    assert server.hits == 2
    assert len(sleep.delays) == 1


async def test_timeouts_everywhere_are_unavailable_caused_by_timeout(
    server: OpenAIServer, make_model: Any
) -> None:
    await server.set_mode("slow")
    llm = make_model(server, retries=0, read_timeout_s=0.1)

    with pytest.raises(LLMUnavailable, match="timeout") as caught:
        await llm.complete(request())

    assert isinstance(caught.value.__cause__, Exception)
    assert isinstance(caught.value.__cause__.__cause__, TimeoutError)


async def test_retry_after_is_honoured_when_short(
    server: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.retry_after = "1.5"
    server.script("error429")

    done = await make_model(server).complete(request())

    assert done.endpoint == 0
    assert sleep.delays == [1.5]


async def test_long_retry_after_skips_to_next_endpoint(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    server.retry_after = "120"
    server.mode = "error503"

    done = await make_model(server, backup).complete(request())

    assert done.endpoint == 1
    assert server.hits == 1
    assert sleep.delays == []


async def test_primary_down_secondary_answers(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any
) -> None:
    await server.set_mode("down")

    done = await make_model(server, backup).complete(request())

    assert done.endpoint == 1
    assert done.model == "backup-model"
    assert backup.system_prompts() == [PERSONA]


async def test_chain_recovers_when_primary_comes_back(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any
) -> None:
    llm = make_model(server, backup)
    assert (await llm.complete(request())).endpoint == 0
    await server.set_mode("down")
    assert (await llm.complete(request())).endpoint == 1
    await server.set_mode("ok")
    assert (await llm.complete(request())).endpoint == 0


async def test_all_down_is_unavailable_without_leaking_text_or_urls(
    server: OpenAIServer,
    backup: OpenAIServer,
    make_model: Any,
    sleep: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await server.set_mode("down")
    await backup.set_mode("down")
    llm = make_model(server, backup, retries=2, api_key="sk-hidden")

    with caplog.at_level(logging.DEBUG), pytest.raises(LLMUnavailable) as caught:
        await llm.complete(request(SECRET_TEXT))

    assert len(sleep.delays) == 4  # two retries on each endpoint
    message = str(caught.value)
    assert "connection" in message
    for leak in (SECRET_TEXT, "127.0.0.1", "sk-hidden"):
        assert leak not in message
        assert leak not in caplog.text


async def test_probe_answers_true_when_up(server: OpenAIServer, make_model: Any) -> None:
    assert await make_model(server).probe() is True
    assert server.model_hits == 1
    assert server.hits == 0


async def test_probe_falls_back_to_one_token_completion_without_models(make_model: Any) -> None:
    async with OpenAIServer(serve_models=False) as s:
        assert await make_model(s).probe() is True
        assert s.requests[0]["max_tokens"] == 1


@pytest.mark.parametrize("mode", ["down", "error500", "drop", "error401"])
async def test_probe_answers_false_without_retrying(
    mode: str, server: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    await server.set_mode(mode)

    assert await make_model(server).probe() is False
    # aiohttp itself resends an idempotent GET once when the server drops the connection.
    assert server.model_hits <= 2
    assert sleep.delays == []


async def test_probe_asks_only_the_primary(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any
) -> None:
    await server.set_mode("down")

    assert await make_model(server, backup).probe() is False
    assert backup.model_hits == 0
    assert backup.hits == 0


async def test_probe_times_out_quickly(make_model: Any) -> None:
    async with OpenAIServer(mode="slow", serve_models=False) as s:
        assert await make_model(s, probe_timeout_s=0.1).probe() is False


async def test_one_session_reuses_one_connection(server: OpenAIServer, make_model: Any) -> None:
    llm = make_model(server)

    for _ in range(4):
        await llm.complete(request())

    assert server.hits == 4
    assert len(set(server.peers)) == 1


async def test_concurrent_calls_share_the_adapter(server: OpenAIServer, make_model: Any) -> None:
    llm = make_model(server, max_connections=4)

    done = await asyncio.gather(*(llm.complete(request(f"n{i}")) for i in range(12)))

    assert [d.text.rsplit(" ", 1)[-1] for d in done] == [f"n{i}" for i in range(12)]
    assert len(set(server.peers)) <= 4


async def test_cancellation_propagates_and_is_not_mapped(
    server: OpenAIServer, backup: OpenAIServer, make_model: Any, sleep: RecordingSleep
) -> None:
    await server.set_mode("slow")
    llm = make_model(server, backup)

    task = asyncio.create_task(llm.complete(request()))
    await server.wait_for_hits(1)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert backup.hits == 0
    assert sleep.delays == []


async def test_cancellation_during_backoff_propagates(server: OpenAIServer) -> None:
    async def cancelled_sleep(delay: float) -> None:
        raise asyncio.CancelledError

    server.mode = "error500"
    settings = LLMSettings(urls=(server.base_url,), model="alfred")
    async with OpenAIChatModel(settings=settings, sleep=cancelled_sleep) as llm:
        with pytest.raises(asyncio.CancelledError):
            await llm.complete(request())
    assert server.hits == 1


async def test_use_after_close_is_an_error(server: OpenAIServer) -> None:
    async with OpenAIChatModel(settings=LLMSettings(urls=(server.base_url,))) as llm:
        await llm.complete(request())
    with pytest.raises(RuntimeError, match="close"):
        await llm.complete(request())


def test_settings_need_an_endpoint() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        LLMSettings(urls=())


@pytest.mark.slow
async def test_server_process_goes_down_and_back_over_http() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.openai_server",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        ready = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        assert ready[0] == "READY"
        port, control_port = int(ready[1]), int(ready[2])
        settings = LLMSettings(urls=(f"http://127.0.0.1:{port}/v1",), model="alfred", retries=0)
        control = f"http://127.0.0.1:{control_port}/_control"
        async with (
            OpenAIChatModel(settings=settings) as llm,
            aiohttp.ClientSession() as http,
        ):
            assert (await llm.complete(request())).endpoint == 0
            async with http.post(control, json={"mode": "down"}) as answer:
                assert (await answer.json())["listening"] is False
            assert await llm.probe() is False
            with pytest.raises(LLMUnavailable):
                await llm.complete(request())
            async with http.post(control, json={"mode": "ok"}) as answer:
                assert (await answer.json())["listening"] is True
            assert await llm.probe() is True
            assert persona_marker(PERSONA) in (await llm.complete(request())).text
            async with http.get(control) as answer:
                state = await answer.json()
        assert [r["messages"][0]["content"] for r in state["requests"]] == [PERSONA] * 2
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize(("mode", "key"), [("error401", ""), ("error403", "sk-wrong")])
async def test_a_refused_key_names_the_setting_that_holds_it(
    mode: str, key: str, server: OpenAIServer, make_model: Any
) -> None:
    await server.set_mode(mode)
    llm = make_model(server, api_key=key)

    with pytest.raises(LLMRejected, match="BUTLER_LLM_API_KEY") as raised:
        await llm.complete(request())
    assert await llm.probe() is False
    assert llm.problem is not None
    assert "BUTLER_LLM_API_KEY" in llm.problem
    said = "refused the key" if key else "wants an API key"
    assert said in str(raised.value)
    assert said in llm.problem
    assert key == "" or key not in str(raised.value) + llm.problem  # the key itself never


async def test_a_probe_of_a_server_that_answers_leaves_no_problem(
    server: OpenAIServer, make_model: Any
) -> None:
    llm = make_model(server)
    await server.set_mode("error401")
    assert await llm.probe() is False
    await server.set_mode("ok")
    assert await llm.probe() is True
    assert llm.problem is None
