"""The ops files hold together: compose references, documented env, dashboards and alerts that
use only metrics the service exports (scraped from a running app) or the documented others."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.admin.server import serve_admin
from adapters.bootstrap.service import admin_config
from adapters.bootstrap.wiring import Ports, open_app
from adapters.observability.metrics import BrokerMetrics, StoreHealthMetrics, WorkerMetrics
from adapters.telegram.metrics import TelegramMetrics
from tests.admin.conftest import admin_settings
from tests.fakes import CollectingSink, MemoryStore, ScriptedLLM
from tests.support.tools import ROOT

OPS = ROOT / "ops"
METRIC = re.compile(r"\b((?:personalized|user|butler)_[a-z0-9_]+|up)\b(?!\s*\()")
SUFFIXES = ("_bucket", "_sum", "_count")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((OPS / "compose.yaml").read_text())
    return loaded


def test_compose_services_and_their_files() -> None:
    services = compose()["services"]
    assert set(services) == {
        "butler",
        "mongo",
        "llm",
        "jaeger",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert services["mongo"]["image"] == "mongo:7"
    assert (OPS / ".." / services["butler"]["build"]["dockerfile"]).resolve().is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = OPS / source
                if name != "llm":  # the model is the operator's to put there
                    assert path.exists(), f"{name}: {source} is missing"
    env = services["butler"]["environment"]
    assert env["BUTLER_STORE"].startswith("mongodb://mongo:27017/")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["BUTLER_LLM_URL"] == "http://llm:8080/v1"
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")  # v1 is end of life
    assert {"4317", "4318", "16686"} <= {p.rsplit(":", 1)[1] for p in jaeger["ports"]}
    assert "COLLECTOR_OTLP_ENABLED" not in jaeger.get("environment", {})  # v1's switch


def test_alerts_are_routed_to_the_stacks_alertmanager() -> None:
    services = compose()["services"]
    manager = services["alertmanager"]
    assert manager["image"].startswith("prom/alertmanager:")
    mounts = dict(v.split(":")[:2] for v in manager["volumes"])
    config_path = next(a for a in manager["command"] if a.startswith("--config.file="))
    source = next(s for s, target in mounts.items() if target == config_path.split("=", 1)[1])
    config = yaml.safe_load((OPS / source).read_text())
    receivers = {r["name"] for r in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in route.get("routes", []))
    assert all(r.get("webhook_configs") for r in config["receivers"])  # none a silent sink
    prometheus = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    [target] = [
        t
        for manager_config in prometheus["alerting"]["alertmanagers"]
        for static in manager_config["static_configs"]
        for t in static["targets"]
    ]
    host, port = target.split(":")
    assert host == "alertmanager"
    assert any(p.endswith(f":{port}") for p in manager["ports"])
    assert "alertmanager" in services["prometheus"]["depends_on"]
    # The routes match on these severities; the default route takes any other alert.
    severities = {
        rule["labels"]["severity"]
        for rules in (OPS / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
    }
    assert severities <= {"critical", "warning", "info"}


def test_every_compose_variable_is_documented() -> None:
    docs = "".join(
        path.read_text(encoding="utf-8")
        for path in (
            ROOT / "docs" / "configuration.md",
            ROOT / "docs" / "operations.md",
            OPS / "RUNBOOK.md",
        )
    )
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            assert f"`{variable}`" in docs, f"{name}: {variable} is not documented"


def test_butler_variables_are_in_the_configuration_table() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in reference.splitlines() if line.startswith("| `"))
    for variable in compose()["services"]["butler"]["environment"]:
        if variable.startswith("BUTLER_"):
            assert f"`{variable}`" in table, variable


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((OPS / "grafana" / "dashboards").glob("*.json"))
    }


def test_dashboards_are_valid_and_provisioned() -> None:
    boards = dashboards()
    assert set(boards) == {
        "latency.json",
        "errors.json",
        "memory.json",
        "actors.json",
        "telegram.json",
        "budget.json",
    }
    telegram = " ".join(t["expr"] for p in boards["telegram.json"]["panels"] for t in p["targets"])
    for name in ("butler_telegram_", 'source="voice"', 'state="transcribing"'):
        assert name in telegram
    budget = " ".join(t["expr"] for p in boards["budget.json"]["panels"] for t in p["targets"])
    for name in ("butler_budget_users", "butler_budget_degraded_total", "butler_llm_tokens_total"):
        assert name in budget
    assert "butler_personalization_enabled" in budget
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["title"], name
        assert board["panels"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        for panel in board["panels"]:
            assert panel["targets"], (name, panel["title"])
            assert all(t["expr"].strip() for t in panel["targets"])
    provider = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    mount = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["grafana"]["volumes"]}
    path = provider["providers"][0]["options"]["path"]
    assert mount[path] == "./grafana/dashboards"


def used_metrics() -> dict[str, set[str]]:
    """Metric names in every dashboard query and alert expression, by where they are used."""
    used: dict[str, set[str]] = {}
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = re.sub(r"\{[^}]*\}", "", target["expr"])  # label values are not names
                used.setdefault(name, set()).update(METRIC.findall(expr))
    for rules in sorted((OPS / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(rules.read_text())["groups"]:
            for rule in group["rules"]:
                expr = re.sub(r"\{[^}]*\}", "", rule["expr"])
                used.setdefault(rules.name, set()).update(METRIC.findall(expr))
    return used


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def documented() -> tuple[set[str], set[str]]:
    """(metrics the service exports, metrics of other components) as docs/metrics.md lists."""
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    own, _, others = text.partition("## From other components")
    pattern = re.compile(r"^\| `([a-z_]+)`", re.MULTILINE)
    return set(pattern.findall(own)), set(pattern.findall(others.split("## Alerts")[0]))


@pytest.mark.anyio
async def test_dashboards_and_alerts_use_exported_or_documented_metrics(tmp_path: Path) -> None:
    settings = admin_settings(tmp_path)
    sink = CollectingSink()
    async with (
        open_app(settings, sink=sink, ports=Ports(store=MemoryStore(), llm=ScriptedLLM())) as app,
        serve_admin(app, admin_config(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        TelegramMetrics(app.metrics)  # `butler run` with a token adds the front door's
        WorkerMetrics(app.metrics)  # and `butler run` always runs the worker
        StoreHealthMetrics(app.metrics)  # and the store watch
        BrokerMetrics(app.metrics, partitions=16)  # and, on a broker, the partition owner
        await app.registry.tell_text("alice", "Добрый вечер")
        await sink.wait_for(1)
        async with http.get(url + "/metrics") as res:
            body = await res.text()
    exported = set()
    for family in text_string_to_metric_families(body):
        name = family.name + ("_total" if family.type == "counter" else "")
        exported.add(name)
    exported = {m for m in exported if not m.startswith(("python_", "process_"))}
    exported = {m for m in exported if not m.endswith("_created")}  # counter timestamps
    own, others = documented()
    assert exported == own, "docs/metrics.md and /metrics differ"
    for where, names in used_metrics().items():
        unknown = {base(n) for n in names} - exported - others
        assert not unknown, f"{where} uses metrics nobody exports: {sorted(unknown)}"


def scale_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((OPS / "compose.scale.yaml").read_text())
    return loaded


def test_the_scale_out_stack_holds_together() -> None:
    base = compose()["services"]
    services = scale_compose()["services"]
    assert set(services) - set(base) == {
        "nats-1",
        "nats-2",
        "nats-3",
        "front",
        "worker-1",
        "worker-2",
    }
    assert services["butler"]["profiles"] == ["single"]  # not a second poller of the token
    nodes = {f"nats-{i}" for i in (1, 2, 3)}
    for node in nodes:
        command = services[node]["command"]
        assert services[node]["image"].startswith("nats:2.")
        assert "--jetstream" in command
        assert command[command.index("--name") + 1] == node
        routes = command[command.index("--routes") + 1].split(",")
        assert {r.removeprefix("nats://").split(":")[0] for r in routes} == nodes - {node}
    assert "--replSet" in services["mongo"]["command"]  # transactions and majority writes
    assert services["front"]["command"] == ["butler", "front"]
    docs = "".join(
        (ROOT / "docs" / name).read_text(encoding="utf-8")
        for name in ("configuration.md", "operations.md")
    ) + (OPS / "RUNBOOK.md").read_text(encoding="utf-8")
    for name in ("front", "worker-1", "worker-2"):
        env = services[name]["environment"]
        urls = env["BUTLER_BROKER_URL"].split(",")
        assert {u.removeprefix("nats://").split(":")[0] for u in urls} == nodes
        assert env["BUTLER_BROKER_REPLICAS"] == "3"
        for variable in env:
            assert f"`{variable}`" in docs, f"{name}: {variable} is not documented"
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert services[name]["command"] == ["butler", "run"]
        assert env["BUTLER_STORE"].startswith("mongodb://mongo:27017/")
        assert "replicaSet=rs0" in env["BUTLER_STORE"]
    prometheus = yaml.safe_load((OPS / "prometheus" / "prometheus.scale.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in prometheus["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {"front", "worker-1", "worker-2"}
    [mount] = services["prometheus"]["volumes"]
    assert mount.split(":")[1] == "/etc/prometheus/prometheus.yml"
    assert (OPS / mount.split(":")[0]).resolve() == (OPS / "prometheus" / "prometheus.scale.yml")
