"""One message's trace, exported by a real `butler chat` process over OTLP/HTTP to a receiver
in the test: the span tree, transitions as span events, a fallback and a compression."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.openai_server import OpenAIServer
from tests.support.tools import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    service: str
    kind: int = 0  # SpanKind in OTLP: 1 internal, 3 client
    children: list[Span] = field(default_factory=list)

    def child(self, name: str) -> Span:
        found = [c for c in self.children if c.name == name]
        assert found, f"{self.name} has no child {name}: {[c.name for c in self.children]}"
        return found[0]


class OTLPReceiver:
    """An OTLP/HTTP traces endpoint (`POST /v1/traces`, protobuf) on 127.0.0.1."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(await request.read())
        self.requests += 1
        for resource_spans in message.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {a.key: value(a.value) for a in s.attributes},
                            [
                                (e.name, {a.key: value(a.value) for a in e.attributes})
                                for e in s.events
                            ],
                            str(resource.get("service.name")),
                            s.kind,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def __aenter__(self) -> OTLPReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def trees(self) -> list[Span]:
        by_id = {s.span_id: s for s in self.spans}
        roots = []
        for s in self.spans:
            parent = by_id.get(s.parent_id)
            if parent is None:
                roots.append(s)
            else:
                parent.children.append(s)
        return roots


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as r:
        yield r


async def test_one_message_is_one_trace_with_fallback_and_compression(
    tmp_path: Path, receiver: OTLPReceiver
) -> None:
    async with OpenAIServer() as llm:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTLER_", "OTEL_"))}
        env.update(
            BUTLER_DATA_DIR=str(tmp_path),
            # The primary refuses connections: every answer comes from the fallback.
            BUTLER_LLM_URL=f"http://127.0.0.1:{closed_port()}/v1,{llm.base_url}",
            BUTLER_LLM_RETRIES="0",
            BUTLER_MEMORY_THRESHOLD="2",
            BUTLER_MEMORY_KEEP="1",
            BUTLER_LOG_FORMAT="json",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_SERVICE_NAME="butler",
            OTEL_BSP_SCHEDULE_DELAY="100",
            PYTHONPATH=str(ROOT),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapters.entrypoints.cli",
            "chat",
            "--user",
            "alice",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            out, err = await proc.communicate("Добрый вечер\nКак дела?\n".encode())
        assert proc.returncode == 0, err.decode()
    assert len(out.decode().splitlines()) == 2
    assert receiver.requests >= 1

    messages = [t for t in receiver.trees() if t.name == "chat.message"]
    assert len(messages) == 2, [t.name for t in receiver.trees()]
    first, second = messages
    assert first.service == "butler"
    assert first.trace_id != second.trace_id
    # `butler chat` claims the user and activates the actor before the first prompt (so it
    # can refuse a user served elsewhere): that is a trace of its own; both messages find
    # the actor live.
    assert "actor.activate" in [t.name for t in receiver.trees()]
    assert {c.name for c in first.children} == {"store.append", "butler.turn"}
    assert {c.name for c in second.children} == {"store.append", "butler.turn"}
    turn = first.child("butler.turn")
    assert turn.trace_id == first.trace_id
    for name in ("store.load_turn", "prompt.build", "llm.chat", "store.append"):
        turn.child(name)
    assert turn.child("prompt.build").attributes["butler.prompt.template_version"]
    chat = turn.child("llm.chat")
    assert chat.attributes["butler.llm.purpose"] == "reply"
    assert chat.attributes["butler.llm.endpoint"] == 1  # the fallback answered
    assert chat.attributes["butler.llm.model"] == "butler-test-model"
    # Under it, the request to the model that answered, as the GenAI conventions name it.
    refused = chat.child("chat")  # the primary: no model known, the connection refused
    assert refused.kind == 3
    assert refused.attributes["error.type"] == "ClientConnectorError"
    assert refused.attributes["butler.llm.endpoint"] == 0
    request = chat.child("chat butler-test-model")
    assert request.kind == 3  # CLIENT
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.provider.name"] == "openai"
    assert request.attributes["gen_ai.request.model"] == "butler-test-model"
    assert request.attributes["gen_ai.response.model"] == "butler-test-model"
    assert request.attributes["gen_ai.usage.input_tokens"] > 0
    assert request.attributes["gen_ai.usage.output_tokens"] > 0
    assert request.attributes["server.address"] == "127.0.0.1"
    assert request.attributes["server.port"] == int(llm.base_url.split(":")[2].split("/")[0])
    transitions = [(e["from"], e["to"], e["trigger"]) for n, e in turn.events if n == "transition"]
    assert transitions == [("idle", "generating", "hear_text"), ("generating", "idle", "replied")]
    # Past the threshold, the second message's turn compresses memory, with its own LLM call.
    compress = second.child("butler.turn").child("butler.compress")
    summary = compress.child("llm.chat")
    assert summary.attributes["butler.llm.purpose"] == "summary"
    assert summary.attributes["butler.llm.endpoint"] == 1
    events = [e["trigger"] for n, e in second.child("butler.turn").events if n == "transition"]
    assert events == ["hear_text", "replied", "compress", "compressed"]
    # No message text in any attribute or event.
    for span in receiver.spans:
        blob = repr(span.attributes) + repr(span.events)
        assert "Добрый вечер" not in blob
        assert "Как дела" not in blob
