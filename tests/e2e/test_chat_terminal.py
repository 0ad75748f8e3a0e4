"""`butler chat` on a terminal, as a person uses it: a real process on a pty, a real model
server. Typed lines, wrapped replies, history kept in the data dir, /exit and Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.test_chat_cli import BUTLER, ROOT, LLMServer, _env

pytestmark = pytest.mark.slow

COLUMNS = 40


def _control_terminal() -> None:
    """In the child, after setsid: the pty becomes its terminal, so Ctrl-C is SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`butler chat` with a pty of COLUMNS columns as its stdin, stdout and stderr."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.fd, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
        env = {k: v for k, v in env.items() if k not in {"COLUMNS", "LINES"}}
        self.proc = subprocess.Popen(
            [*BUTLER, "chat", *args],
            cwd=ROOT,
            env=env,
            stdin=child,
            stdout=child,
            stderr=child,
            start_new_session=True,
            preexec_fn=_control_terminal,  # noqa: PLW1509 - a test's own child, no threads
        )
        os.close(child)
        self.screen = ""

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until `text` has appeared; returns everything read so far."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never came; the terminal shows:\n{self.screen}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the pty
                    chunk = b""
                assert chunk, f"{text!r} never came; the terminal shows:\n{self.screen}"
                self.screen += chunk.decode("utf-8", "replace")
        return self.screen

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            os.close(self.fd)


def test_a_typed_line_gets_a_wrapped_reply_and_exit_leaves(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    env = _env(tmp_path, llm_server)
    term = Terminal(env, "--user", "newcomer", "--language", "en")
    term.expect("> ")
    question = "Good evening, would you tell me about the tea and the garden today"
    term.type(question + "\r")
    screen = term.expect("> ", timeout=60) and term.expect("garden today\r\n> ")
    reply = screen.split(question, 1)[1]
    lines = [line for line in reply.replace("\r", "").split("\n") if line.strip()]
    assert lines[0].startswith("[system: You are")  # --language en: an English persona
    assert len(lines) >= 3  # the reply was wrapped, not one long line
    assert all(len(line) <= COLUMNS for line in lines[:-1]), lines
    term.type("/exit\r")
    assert term.exit_code() == 0
    assert (tmp_path / "data" / "chat_history").read_text().splitlines()[-2:] == [
        question,
        "/exit",
    ]


def test_ctrl_c_at_the_prompt_leaves_at_once_without_a_traceback(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    env = _env(tmp_path, llm_server)
    term = Terminal(env)
    term.expect("> ")
    term.type("half a thought")
    term.expect("half a thought")
    started = time.monotonic()
    term.type("\x03")
    assert term.exit_code(timeout=10) == 130
    assert time.monotonic() - started < 5
    assert "Traceback" not in term.screen


def test_ctrl_d_leaves(tmp_path: Path, llm_server: LLMServer) -> None:
    term = Terminal(_env(tmp_path, llm_server))
    term.expect("> ")
    term.type("\x04")
    assert term.exit_code() == 0
