"""Voice notes the butler cannot listen to: he says why, in the user's language."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.registry import Registry
from engine.persona import audio_problem
from tests.fakes import CollectingSink, FakeTranscriber, ManualClock, MemoryStore, ScriptedLLM
from tests.helpers import make_deps

pytestmark = pytest.mark.anyio


async def test_a_busy_transcriber_asks_for_the_voice_note_again():
    store, sink, clock = MemoryStore(), CollectingSink(), ManualClock()
    transcriber = FakeTranscriber(capacity=0, wait_s=0.01)  # never a free slot
    deps = replace(
        make_deps(store=store, llm=ScriptedLLM(), sink=sink, clock=clock),
        transcriber=transcriber,
    )
    async with Registry(deps) as registry:
        await registry.tell_voice("v", FakeTranscriber.speech("Привет", "ru"))
        [reply] = await sink.wait_for(1)
    assert reply.kind == "voice_rejected"
    assert audio_problem("busy", "ru") in reply.text
