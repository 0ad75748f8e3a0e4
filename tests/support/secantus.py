"""A real MongoDB-wire-protocol server for tests and benchmarks: `secantusd-py` from the
`secantusdb` test dependency, in a subprocess on 127.0.0.1, with its data in a folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass
class SecantusServer:
    """One `secantusd-py` process; `start` it, `kill` it (SIGKILL) and `start` it again on
    the same port and data folder.

    `standalone=True` drops the single-node replica-set advertisement: the server then looks
    like a standalone mongod, which has no transactions.
    """

    folder: Path
    standalone: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

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
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"secantusd-py did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
