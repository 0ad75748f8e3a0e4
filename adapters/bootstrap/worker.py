"""The memory worker run from outside the service (`butler worker [--once]`): one sweep, or
a sweep every interval.

Each sweep opens the store, finds candidates, and asks the service's admin API to compress
them; when no service answers, it opens its own registry over the store instead, asks the
actors there, and drains it. Metrics go to `BUTLER_WORKER_METRICS_FILE` (node_exporter's
textfile collector), carried over from run to run.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from actors.memory_worker import (
    DiscardSink,
    RegistryRequester,
    RunReport,
    ServiceAbsent,
    find_candidates,
    guarded,
    sweep,
)
from adapters.admin.client import AdminClient, AdminRequester
from adapters.bootstrap.clock import SystemClock
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports, open_app, open_store
from adapters.observability.metrics import WorkerMetrics
from engine.ports import Clock

log = logging.getLogger(__name__)


async def sweep_once(settings: Settings, clock: Clock) -> RunReport:
    """One sweep: ask the service, or this process's own registry when none answers."""
    store = await open_store(settings)
    try:
        candidates = await find_candidates(
            store, settings.policy, clock, idle_s=settings.worker_idle_s
        )
        if not candidates:
            return RunReport(0, 0, 0)
        async with AdminClient(settings.admin_url, settings.admin_token, timeout_s=10.0) as admin:
            try:
                return await sweep(candidates, AdminRequester(admin))
            except ServiceAbsent:
                log.info("no service at the admin URL: compressing with a registry of our own")
        ports = Ports(store=store, clock=clock)
        async with open_app(settings, sink=DiscardSink(), ports=ports) as app:
            requester = RegistryRequester(
                app.registry, store, timeout_s=settings.policy.timeout_s * 2, skip_owed=True
            )
            return await sweep(candidates, requester)
    finally:
        await store.close()


async def worker(settings: Settings, *, once: bool, interval_s: float | None = None) -> int:
    """Run sweeps; with `once`, exit 0 after a successful sweep and 1 after a failed one."""
    clock = SystemClock()
    metrics = WorkerMetrics(CollectorRegistry())
    textfile = Path(settings.worker_metrics_file) if settings.worker_metrics_file else None
    if textfile is not None:
        metrics.restore(textfile)
    interval = interval_s or settings.worker_interval_s
    while True:
        report = await guarded(lambda: sweep_once(settings, clock))
        metrics.record(report, clock.now().timestamp())
        if textfile is not None:
            metrics.write(textfile)
        log.info(
            "worker run",
            extra={
                "candidates": report.candidates,
                "requested": report.requested,
                "failures": report.failures,
            },
        )
        if once:
            return 0 if report.ok else 1
        await asyncio.sleep(interval)  # noqa: TID251 - a periodic job
