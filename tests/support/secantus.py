"""A real MongoDB-wire-protocol server for tests and benchmarks: `secantusd-py` from the
`secantusdb` test dependency, in a subprocess on 127.0.0.1, with its data in a folder.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass
class SecantusServer:
    """One `secantusd-py` process; `start` it, `kill` it (SIGKILL) and `start` it again on
    the same port and data folder.

    `standalone=True` drops the single-node replica-set advertisement: the server then looks
    like a standalone mongod, which has no transactions.

    mongod aborts a transaction left idle past `transactionLifetimeLimitSeconds` (60 s) from
    a periodic job, so the transaction of a client killed mid-write ends on its own. This
    server reaps such transactions only when another transaction's statement arrives, so a
    write blocked behind one (a worker taking over the lease the dead worker's transaction
    updated) waits forever when no other transaction comes. A reaper thread stands in for
    mongod's job: a transaction of one read every `reaper_every_s`, while the server runs.
    """

    folder: Path
    standalone: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    reaper_every_s: float = 1.0
    _reaper: threading.Thread | None = field(default=None, repr=False)
    _reaper_stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def uri(self, database: str = "butler", **options: object) -> str:
        query = "&".join(
            ["directConnection=true", *(f"{k}={v}" for k, v in sorted(options.items()))]
        )
        return f"mongodb://127.0.0.1:{self.port}/{database}?{query}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until it listens (on a free port the first time)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "secantusd.log"
        log.write_bytes(b"")
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
        command = [
            executable or "secantusd-py",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.folder / "data"),
            "--log-level",
            "INFO",
        ]
        if self.standalone:
            command.append("--standalone")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            found = _LISTENING.search(log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                self._start_reaper()
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"secantusd-py did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)

    def _start_reaper(self) -> None:
        if self.standalone:
            return  # a standalone has no transactions to reap
        self._reaper_stop = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap, args=(self.uri("secantus_reaper"), self._reaper_stop), daemon=True
        )
        self._reaper.start()

    def _reap(self, uri: str, stop: threading.Event) -> None:
        client: MongoClient[dict[str, object]] = MongoClient(
            uri, serverSelectionTimeoutMS=500, socketTimeoutMS=5000
        )
        try:
            while not stop.wait(self.reaper_every_s):
                # A statement of a transaction: the server reaps idle ones first.
                with (
                    contextlib.suppress(PyMongoError),
                    client.start_session() as session,
                    session.start_transaction(),
                ):
                    client.secantus_reaper.tick.find_one({}, session=session)
        finally:
            client.close()

    def _stop_reaper(self) -> None:
        self._reaper_stop.set()
        if self._reaper is not None:
            self._reaper.join(10)
            self._reaper = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        self._stop_reaper()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        self._stop_reaper()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
