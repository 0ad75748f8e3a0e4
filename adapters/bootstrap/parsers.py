"""Parsers of `BUTLER_*` values: stripped text in, a typed value out, or a ValueError saying
what was expected. Messages leave the variable's name out (settings.py prefixes it) and never
echo credentials: a URL is shown with its user and password masked.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def masked(url: str) -> str:
    """`url` with everything before its last `@` (user, password) replaced by `***`."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{head}://***@{rest.rpartition('@')[2]}"


def text(raw: str) -> str:
    return raw


def integer(*, minimum: int = 1) -> Callable[[str], int]:
    """An integer of at least `minimum`."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def number(*, zero: bool = False) -> Callable[[str], float]:
    """A finite number above zero (or at least zero when `zero`)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw!r}")
        if value < 0 or (value == 0 and not zero):
            raise ValueError(f"must be {'at least 0' if zero else 'above 0'}, got {raw}")
        return value

    return parse


def millis(raw: str) -> float:
    """Milliseconds (an integer, 0 allowed) as seconds."""
    return integer(minimum=0)(raw) / 1000


def flag(raw: str) -> bool:
    value = raw.lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def choice(*allowed: str, upper: bool = False) -> Callable[[str], str]:
    """One of `allowed`, in any case; returned lower case (upper case when `upper`)."""

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value.upper() if upper else value

    return parse


def http_url(raw: str) -> str:
    """An http(s) URL without its trailing slashes."""
    if not raw.startswith(("http://", "https://")) or raw in {"http://", "https://"}:
        raise ValueError(f"expected an http(s) URL, got {masked(raw)!r}")
    return raw.rstrip("/")


def http_url_or_empty(raw: str) -> str:
    """An http(s) URL, or empty (not set)."""
    return http_url(raw) if raw else ""


def http_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated http(s) base URLs, in order."""
    try:
        return tuple(http_url(part.strip()) for part in raw.split(","))
    except ValueError:
        raise ValueError("expected comma-separated http(s) base URLs") from None


def host_port(raw: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) as a pair; no host means 127.0.0.1; port 0 picks a
    free port when the server starts (its address is logged)."""
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected host:port, got {raw!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen_address(raw: str) -> str:
    """A `host:port` checked now and kept as text (the Telegram adapter splits it)."""
    host_port(raw)
    return raw


def user_ids(raw: str) -> frozenset[int]:
    try:
        return frozenset(int(u) for u in raw.replace(" ", "").split(",") if u)
    except ValueError:
        raise ValueError("expected comma-separated Telegram user ids") from None


def local_model(raw: str) -> str:
    """A CTranslate2 model directory, checked now so a typo fails at start, not at fallback."""
    if not raw:
        return ""
    folder = Path(raw).expanduser()
    if not (folder / "model.bin").is_file() or not (folder / "tokenizer.json").is_file():
        raise ValueError(
            f"{folder} is not a CTranslate2 model directory "
            "(model.bin and tokenizer.json expected; see docs/operations.md on converting a model)"
        )
    if importlib.util.find_spec("ctranslate2") is None:
        raise ValueError(
            "needs the local-llm extra: pip install -e '.[local-llm]' in the source tree "
            "(the PyPI project `butler` is not ours; ours is butler-assistant)"
        )
    return str(folder)


def sqlite_file(store: str) -> Path | None:
    """The SQLite file `store` names, read as SQLAlchemy reads it; None for MongoDB.

    `sqlite:///` is followed by the path: `sqlite:///b.db` is `b.db` (relative),
    `sqlite:////var/b.db` is `/var/b.db`. Anything without a scheme is a plain path.
    """
    if store.startswith(("mongodb://", "mongodb+srv://")):
        return None
    return Path(store.removeprefix("sqlite:///"))


def store(raw: str) -> str:
    """A MongoDB URI as given, or the absolute path of the SQLite file (relative to the cwd).

    Raises:
        ValueError: another scheme, an in-memory or malformed SQLite URL, a bare MongoDB URI.
    """
    scheme = _SCHEME.match(raw)
    if scheme is None:
        if raw.startswith("sqlite:"):
            raise ValueError(_SQLITE_FORMS)
        return os.path.abspath(Path(raw).expanduser())
    name = scheme.group(1).lower()
    if name in {"mongodb", "mongodb+srv"}:
        if len(raw) == len(scheme.group(0)):
            raise ValueError("a MongoDB URI needs a host: mongodb://host:27017/butler")
        return raw
    if name != "sqlite":
        raise ValueError(
            f"unsupported scheme {name}:// in {masked(raw)!r}; expected a file path, "
            "sqlite:///path or mongodb(+srv)://host/database"
        )
    path = raw[len(scheme.group(0)) :]
    if not path.startswith("/") or "?" in path or path in {"/", "/:memory:"}:
        raise ValueError(_SQLITE_FORMS)
    return os.path.abspath(path[1:])


_SQLITE_FORMS = (
    "a SQLite URL is sqlite:///relative/file.db or sqlite:////absolute/file.db "
    "(no host, no query, not in memory); or give a plain path"
)


def nats_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated `nats://` (or `tls://`) server URLs; empty: none."""
    urls = tuple(part.strip() for part in raw.split(",") if part.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in {"nats", "tls"} or not parts.hostname:
            raise ValueError(f"expected nats://host:port, not {url.split('@')[-1]!r}")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError(f"bad port in {url.split('@')[-1]!r}") from None
    return urls
