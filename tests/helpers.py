"""Builders shared by tests: actor dependencies over fakes."""

from __future__ import annotations

from opentelemetry import trace

from actors.deps import ActorDeps, ActorSettings
from actors.observe import Observation
from adapters.app import Templates
from engine.compression import CompressionPolicy
from engine.ports import Clock, LanguageModel, ReplySink, Store
from engine.prompt import Budget, PromptBuilder
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
) -> ActorDeps:
    templates = Templates.load()
    counter = CalibratedEstimator()
    return ActorDeps(
        store=store,
        llm=llm,
        sink=sink,
        clock=clock,
        counter=counter,
        prompts=PromptBuilder(
            templates.persona, templates.memory_summary, counter, budget or Budget()
        ),
        summarize=templates.summarize,
        observer=observer or Recorder(),
        tracer=trace.get_tracer("butler.tests"),
        policy=policy or CompressionPolicy(),
        settings=settings or ActorSettings(),
    )
