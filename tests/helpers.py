"""Builders shared by tests: actor dependencies over fakes, through the real wiring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from actors.deps import ActorDeps, ActorSettings
from actors.observe import Observation
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import Ports, actor_deps
from engine.compression import CompressionPolicy
from engine.ports import Clock, LanguageModel, ReplySink, Store, Transcriber
from engine.prompt import Budget
from engine.tokens import CalibratedEstimator


class Recorder:
    """An observer that keeps every observation."""

    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def record(self, observation: Observation) -> None:
        self.seen.append(observation)


def make_deps(
    *,
    store: Store,
    llm: LanguageModel,
    sink: ReplySink,
    clock: Clock,
    settings: ActorSettings | None = None,
    policy: CompressionPolicy | None = None,
    budget: Budget | None = None,
    observer: Recorder | None = None,
    transcriber: Transcriber | None = None,
) -> ActorDeps:
    """`adapters.bootstrap.wiring.actor_deps` on default settings, with these ports and
    tunables (the data directory is never touched: no port is built from it)."""
    base = Settings.from_env({"BUTLER_DATA_DIR": str(Path("/nonexistent/butler-tests"))})
    base = replace(
        base,
        # One turn per message unless a test asks for coalescing: a manual clock would
        # never see a coalescing window close.
        actors=settings or replace(base.actors, coalesce_s=0.0),
        policy=policy or base.policy,
        budget=budget or base.budget,
    )
    ports = Ports(
        clock=clock,
        counter=CalibratedEstimator(),
        observer=observer or Recorder(),
        transcriber=transcriber,
    )
    return actor_deps(base, sink=sink, store=store, llm=llm, ports=ports)
