"""The compression worker over a real SQLite file, a real LLM server and a stub admin API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from actors.memory_worker import (
    Candidate,
    RegistryRequester,
    RequestFailed,
    RunReport,
    ServiceAbsent,
    find_candidates,
    guarded,
    start_worker,
    sweep,
)
from actors.registry import Registry
from adapters.admin.client import AdminClient, AdminRequester
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.worker import sweep_once, worker
from adapters.observability.metrics import WorkerMetrics
from adapters.storage.sqlite import SqliteStore
from engine.compression import CompressionPolicy
from engine.domain import EventIds, MemoryEvent, UserProfile
from engine.errors import StoreUnavailable
from tests.fakes import CollectingSink, ManualClock, ScriptedLLM
from tests.helpers import make_deps
from tests.support.openai_server import OpenAIServer
from tests.support.ports import closed_url

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
POLICY = CompressionPolicy()  # threshold 50, keep 20


async def seed(store: SqliteStore, user_id: str, count: int, *, age: timedelta) -> None:
    """`count` answered events, the newest `age` old; the replies were delivered."""
    ids = EventIds()
    start = NOW - age - timedelta(seconds=count)
    events: list[MemoryEvent] = []
    for i in range(count):
        key, stamp = ids.next(start + timedelta(seconds=i))
        if i % 2 == 0:
            events.append(MemoryEvent(key, user_id, "user", f"сообщение {i}", "text", stamp, 3))
        else:
            reply_to = events[-1].id
            events.append(
                MemoryEvent(key, user_id, "assistant", f"ответ {i}", "text", stamp, 3, reply_to)
            )
    await store.append(events, profile=UserProfile.new(user_id, start))
    for event in events:
        if event.role == "assistant":
            await store.mark_delivered(user_id, event.id, "seeded")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "butler.sqlite3")
    await seed(s, "busy", 60, age=timedelta(minutes=1))  # over the threshold
    await seed(s, "idle", 36, age=timedelta(hours=2))  # idle, 16 beyond the kept tail
    await seed(s, "recent", 36, age=timedelta(minutes=1))  # not idle yet
    await seed(s, "small", 28, age=timedelta(hours=2))  # idle, too little to fold
    yield s
    await s.close()


async def test_candidates_are_users_over_the_threshold_and_idle_users_with_history(store):
    found = await find_candidates(store, POLICY, SystemClock(), idle_s=3600)
    assert found == [Candidate("busy", 60, eager=False), Candidate("idle", 36, eager=True)]
    assert await find_candidates(store, POLICY, SystemClock(), idle_s=3 * 3600) == [
        Candidate("busy", 60, eager=False)
    ]


STAMP = {"X-Butler-Admin": "1"}  # what Butler's admin server puts on every answer


@dataclass
class AdminStub:
    """What the service's admin route is expected to do: 202 for an authorised request."""

    status: int = 202
    token: str = "s3cret"
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    async def compress(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.seen.append((request.match_info["user_id"], request.query.get("eager", ""), auth))
        if auth != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorised"}, status=401, headers=STAMP)
        return web.json_response({"queued": True}, status=self.status, headers=STAMP)


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminStub, str]]:
    stub = AdminStub()
    app = web.Application()
    app.router.add_post("/admin/actors/{user_id}/compress", stub.compress)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield stub, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_admin_requester_posts_to_the_route_with_the_bearer(admin):
    stub, url = admin
    client = AdminClient(url + "/", "s3cret")
    requester = AdminRequester(client)
    try:
        await requester.request(Candidate("busy", 60, eager=False))
        await requester.request(Candidate("a/b c", 36, eager=True))
        stub.status = 500
        with pytest.raises(RequestFailed, match="500"):
            await requester.request(Candidate("busy", 60, eager=False))
    finally:
        await client.close()
    assert stub.seen == [
        ("busy", "", "Bearer s3cret"),
        ("a/b c", "1", "Bearer s3cret"),  # quoted in the path, whole again on the server
        ("busy", "", "Bearer s3cret"),
    ]


async def test_a_wrong_token_is_a_failed_request(admin):
    _, url = admin
    client = AdminClient(url, "wrong")
    requester = AdminRequester(client)
    try:
        with pytest.raises(RequestFailed, match="401"):
            await requester.request(Candidate("busy", 60, eager=False))
    finally:
        await client.close()


async def test_no_service_is_service_absent():
    client = AdminClient(closed_url(), "")
    requester = AdminRequester(client)
    try:
        with pytest.raises(ServiceAbsent):
            await requester.request(Candidate("busy", 60, eager=False))
    finally:
        await client.close()


@dataclass
class ScriptedRequester:
    outcomes: list[Exception | None]
    asked: list[str] = field(default_factory=list)

    async def request(self, candidate: Candidate) -> None:
        self.asked.append(candidate.user_id)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


CANDIDATES = [Candidate(u, 60, eager=False) for u in ("a", "b", "c")]


async def test_sweep_counts_failures_and_goes_on():
    requester = ScriptedRequester([None, RequestFailed("x"), ServiceAbsent("gone")])
    report = await sweep(CANDIDATES, requester)
    assert report == RunReport(candidates=3, requested=1, failures=2)
    assert requester.asked == ["a", "b", "c"]
    assert not report.ok


async def test_sweep_raises_service_absent_only_on_the_first_request():
    with pytest.raises(ServiceAbsent):
        await sweep(CANDIDATES, ScriptedRequester([ServiceAbsent("none")]))


async def test_a_dead_store_is_a_failed_run():
    async def run() -> RunReport:
        raise StoreUnavailable("down")

    report = await guarded(run)
    assert report.store_failed
    assert not report.ok


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_metrics_count_runs_failures_and_carry_over_a_textfile(tmp_path: Path):
    path = tmp_path / "textfile" / "butler_worker.prom"
    first = WorkerMetrics(CollectorRegistry())
    first.record(RunReport(2, 2, 0), now=1000.0)
    first.record(RunReport(2, 1, 1), now=1100.0)
    first.record(RunReport(0, 0, 0, store_failed=True), now=1200.0)
    first.write(path)
    second = WorkerMetrics(CollectorRegistry())
    second.restore(path)
    second.record(RunReport(1, 0, 1), now=1300.0)
    r = second.registry
    assert _value(r, "personalized_memory_worker_runs_total") == 4
    assert _value(r, "personalized_memory_worker_errors_total") == 3
    assert _value(r, "butler_memory_worker_consecutive_failures") == 3
    assert _value(r, "butler_memory_worker_last_success_timestamp_seconds") == 1000.0
    assert _value(r, "butler_memory_worker_requests_total") == 3
    second.record(RunReport(1, 1, 0), now=1400.0)
    assert _value(r, "butler_memory_worker_consecutive_failures") == 0
    WorkerMetrics(CollectorRegistry()).restore(tmp_path / "missing.prom")  # first run: no file


def _settings(tmp_path: Path, llm_url: str, admin_url: str, **extra: str) -> Settings:
    env = {
        "HOME": str(tmp_path),
        "BUTLER_STORE": str(tmp_path / "butler.sqlite3"),
        "BUTLER_LLM_URL": llm_url,
        "BUTLER_LLM_RETRIES": "0",
        "BUTLER_ADMIN_URL": admin_url,
        "BUTLER_ADMIN_TOKEN": "s3cret",
        **extra,
    }
    return Settings.from_env(env)


async def _counts(path: Path, *users: str) -> dict[str, tuple[int, str]]:
    s = await SqliteStore.open(path)
    try:
        out = {}
        for user in users:
            context = await s.load_turn(user, limit=0, before="\uffff")
            assert context.profile is not None
            out[user] = (context.memory.total_events, context.profile.memory_summary)
        return out
    finally:
        await s.close()


async def test_sweep_once_asks_a_running_service(tmp_path: Path, store, admin):
    stub, url = admin
    settings = _settings(tmp_path, closed_url("/v1"), url)
    report = await sweep_once(settings, SystemClock())
    assert report == RunReport(candidates=2, requested=2, failures=0)
    assert [(u, eager) for u, eager, _ in stub.seen] == [("busy", ""), ("idle", "1")]
    counts = await _counts(tmp_path / "butler.sqlite3", "busy", "idle")
    assert counts == {"busy": (60, ""), "idle": (36, "")}  # the service compresses, not us


async def test_sweep_once_without_a_service_compresses_with_its_own_registry(tmp_path: Path, store):
    await store.append(  # a message owed a reply: that user is left for the service
        [MemoryEvent("f" * 24, "recent", "user", "ау?", "text", NOW, 2)]
    )
    await seed(store, "owed", 1, age=timedelta(minutes=1))
    for i in range(60):
        key, stamp = EventIds().next(NOW + timedelta(seconds=i))
        await store.append([MemoryEvent(key, "owed", "user", f"m{i}", "text", stamp, 2)])
    async with OpenAIServer() as llm:
        settings = _settings(tmp_path, llm.base_url, closed_url())
        report = await sweep_once(settings, SystemClock())
    assert report == RunReport(candidates=3, requested=3, failures=0)
    counts = await _counts(tmp_path / "butler.sqlite3", "busy", "idle", "owed", "small")
    assert counts["busy"][0] == 20
    assert counts["idle"][0] == 20
    assert counts["busy"][1].startswith("Сводка:")
    assert counts["owed"] == (61, "")  # skipped: nobody would hear the answers
    assert counts["small"] == (28, "")


async def test_worker_once_exit_code_and_textfile(tmp_path: Path):
    metrics_file = tmp_path / "worker.prom"
    good = _settings(
        tmp_path,
        closed_url("/v1"),
        closed_url(),
        BUTLER_WORKER_METRICS_FILE=str(metrics_file),
    )
    assert await worker(good, once=True) == 0  # an empty store: nothing to do, a good run
    bad = _settings(
        tmp_path,
        closed_url("/v1"),
        closed_url(),
        BUTLER_STORE=str(tmp_path),  # a directory: SQLite cannot open it
        BUTLER_WORKER_METRICS_FILE=str(metrics_file),
    )
    assert await worker(bad, once=True) == 1
    text = metrics_file.read_text()
    assert "personalized_memory_worker_runs_total 2.0" in text
    assert "personalized_memory_worker_errors_total 1.0" in text


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a condition, with a deadline
            await asyncio.sleep(0.005)  # noqa: TID251 - polls a condition, with a deadline


async def test_in_process_worker_compresses_through_the_service_registry(store):
    sink, registry_metrics = CollectingSink(), CollectorRegistry()
    deps = make_deps(store=store, llm=ScriptedLLM(), sink=sink, clock=SystemClock())
    async with Registry(deps) as registry:
        worker_task = start_worker(
            registry=registry,
            store=store,
            policy=POLICY,
            clock=SystemClock(),
            metrics=WorkerMetrics(registry_metrics),
            interval_s=3600,
            idle_s=3600,
        )
        try:
            await _until(
                lambda: registry_metrics.get_sample_value("personalized_memory_worker_runs_total")
            )
        finally:
            await worker_task.stop()
    assert _value(registry_metrics, "butler_memory_worker_requests_total") == 2
    assert _value(registry_metrics, "butler_memory_worker_consecutive_failures") == 0
    counts = {
        u: (await store.load_turn(u, limit=0, before="\uffff")).memory.total_events
        for u in ("busy", "idle", "recent", "small")
    }
    assert counts == {"busy": 20, "idle": 20, "recent": 36, "small": 28}
    assert sink.replies == []


async def test_registry_requester_waits_for_the_compression(store):
    deps = make_deps(store=store, llm=ScriptedLLM(), sink=CollectingSink(), clock=ManualClock(NOW))
    async with Registry(deps) as registry:
        requester = RegistryRequester(registry, store, timeout_s=10)
        await requester.request(Candidate("idle", 36, eager=True))
        # handled when request() returns: no polling needed
        assert (await store.load_turn("idle", limit=0, before="\uffff")).memory.total_events == 20
        await requester.request(Candidate("small", 28, eager=False))  # not due: a no-op
    assert (await store.load_turn("small", limit=0, before="\uffff")).memory.total_events == 28
