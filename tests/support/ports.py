"""Ports for tests: servers bind port 0; a client that must find nothing gets a closed port."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A loopback port nothing listens on: one the kernel just handed out, closed again.

    Ephemeral ports rotate, so another bind(0) in the same moments is unlikely to get it.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_url(path: str = "") -> str:
    """`http://127.0.0.1:<closed port><path>`, for a service that must not be found."""
    return f"http://127.0.0.1:{closed_port()}{path}"
