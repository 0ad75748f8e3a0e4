"""A voice note through the whole engine: `open_app` with the real SQLite store and the real
Whisper transcriber (the packaged model), a scripted language model behind its port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.observe import TransitionMade
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import App, Ports, open_app
from adapters.stt.whisper import LazyWhisperModel, WhisperTranscriber
from engine.lifecycle import Phase, Trigger
from engine.persona import variants
from tests.fakes import CollectingSink, ScriptedLLM
from tests.helpers import Recorder
from tests.support import audio

pytestmark = pytest.mark.anyio

USER = "voice-user"


class Engine:
    def __init__(self, app: App, sink: CollectingSink, llm: ScriptedLLM, seen: Recorder) -> None:
        self.app, self.sink, self.llm, self.seen = app, sink, llm, seen

    def transitions(self) -> list[tuple[str, str, str]]:
        return [
            (o.source.value, o.dest.value, o.trigger.value)
            for o in self.seen.seen
            if isinstance(o, TransitionMade)
        ]


@pytest.fixture
async def engine(tmp_path: Path, whisper_model: LazyWhisperModel) -> AsyncIterator[Engine]:
    settings = Settings.from_env({"BUTLER_DATA_DIR": str(tmp_path)})
    sink, llm, seen = CollectingSink(), ScriptedLLM(), Recorder()
    stt = WhisperTranscriber(settings.stt, data_dir=tmp_path, model=whisper_model)
    async with open_app(
        settings, sink=sink, ports=Ports(llm=llm, transcriber=stt, observer=seen)
    ) as app:
        yield Engine(app, sink, llm, seen)


async def test_a_voice_note_is_transcribed_stored_and_answered(
    engine: Engine, voice_notes: dict[str, bytes]
) -> None:
    ticket = await engine.app.registry.tell_voice(USER, voice_notes["ru"], language="ru")
    [reply] = await engine.sink.wait_for(1, timeout=60)
    assert (reply.kind, reply.source, reply.reply_to) == ("reply", "voice", ticket.event_id)  # type: ignore[union-attr]
    assert engine.transitions() == [
        (Phase.IDLE, Phase.TRANSCRIBING, Trigger.HEAR_VOICE),
        (Phase.TRANSCRIBING, Phase.GENERATING, Trigger.TRANSCRIBED),
        (Phase.GENERATING, Phase.IDLE, Trigger.REPLIED),
    ]
    actor = engine.app.registry.get(USER)
    assert actor is not None
    assert actor.phase is Phase.IDLE
    events = await engine.app.store.events_before(USER, keep_last=0)
    user_event, reply_event = events
    assert (user_event.role, user_event.source) == ("user", "voice")
    assert audio.key_word_share(user_event.content, audio.RU_KEY_WORDS) >= 0.5
    assert user_event.tokens > 0
    assert (reply_event.reply_to, reply_event.source) == (user_event.id, "voice")
    assert engine.llm.calls[-1].messages[-1].content == user_event.content
    assert await engine.app.store.unanswered(USER) == []


async def test_corrupt_audio_is_answered_and_the_actor_is_idle_with_nothing_lost(
    engine: Engine, voice_notes: dict[str, bytes]
) -> None:
    note = voice_notes["ru"]
    await engine.app.registry.tell_voice(USER, note[: len(note) // 2], language="ru")
    [reply] = await engine.sink.wait_for(1, timeout=30)
    assert reply.kind == "voice_rejected"
    assert "запись оборвалась" in reply.text  # said in the user's language
    assert any(reply.text.startswith(v.split("{")[0]) for v in variants("voice_rejected", "ru"))
    assert engine.transitions() == [
        (Phase.IDLE, Phase.TRANSCRIBING, Trigger.HEAR_VOICE),
        (Phase.TRANSCRIBING, Phase.IDLE, Trigger.TRANSCRIPTION_FAILED),
    ]
    assert not engine.llm.calls
    events = await engine.app.store.events_before(USER, keep_last=0)
    assert [(e.role, e.source, e.reply_to) for e in events] == [
        ("user", "voice", ""),
        ("assistant", "voice", events[0].id),
    ]
    assert await engine.app.store.unanswered(USER) == []
    # The next message is answered as usual.
    await engine.app.registry.tell_voice(USER, voice_notes["en"], language="ru")
    second = (await engine.sink.wait_for(2, timeout=60))[1]
    assert second.kind == "reply"
    assert "milk" in engine.llm.calls[-1].messages[-1].content.lower()
