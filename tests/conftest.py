"""Shared fixtures: the async backend for anyio's pytest plugin, the Whisper model, voice
notes, a MongoDB-protocol server; and the CI rule that a skipped test is a failed one."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from adapters.stt.whisper import LazyWhisperModel
from tests.support import audio
from tests.support.nats_cluster import NatsCluster
from tests.support.secantus import SecantusServer
from tests.support.tools import in_ci

SKIPS_ALLOWED_IN_CI: dict[str, str] = {}
"""Substring of a skip reason -> why CI may skip such a test. Empty: CI runs every test."""


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Under CI, turn a skip into a failure unless its reason is allowed above."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if any(allowed in reason for allowed in SKIPS_ALLOWED_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which must run every test: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_skip(report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A last guard: under CI a run with any skip left does not pass."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if in_ci() and skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> LazyWhisperModel:
    """The packaged Whisper base model, assembled and loaded once per session (slow: ~3 s)."""
    model = LazyWhisperModel("", data_dir=tmp_path_factory.mktemp("whisper"), workers=2)
    model.get()
    return model


@pytest.fixture(scope="session")
def voice_notes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Telegram-like OGG/Opus notes made with espeak-ng and ffmpeg, once per session."""
    folder = tmp_path_factory.mktemp("voice")
    return {
        "ru": audio.make_voice_note(audio.RU_NOTE, "ru", folder / "ru.ogg"),
        "en": audio.make_voice_note(audio.EN_NOTE, "en", folder / "en.ogg"),
        "silence": audio.make_silence(3.0, folder / "silence.ogg"),
        "tone": audio.make_tone(3.0, folder / "tone.ogg"),
    }


@pytest.fixture(scope="session")
def secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    """One `secantusd-py` for the session; tests keep apart by using fresh database names."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three `nats-server` JetStream nodes for the session; tests keep apart by stream name."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), nodes=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
