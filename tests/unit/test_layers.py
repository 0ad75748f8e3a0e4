"""STYLE.md rule 1: engine <- actors (and specs) <- adapters, checked by an AST scan.

Every import counts, including those inside functions and `if TYPE_CHECKING:` blocks, relative
imports, and `importlib.import_module("...")` calls with a literal name.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("engine", "actors", "specs", "adapters")
STDLIB = frozenset(sys.stdlib_module_names)
# Third-party packages that engine/ must never see (beyond the stdlib-only rule itself).
FRAMEWORKS = (
    "aiohttp",
    "transitions",
    "opentelemetry",
    "prometheus_client",
    "tokenizers",
    "anyio",
    "pymongo",
    "aiogram",
    "faster_whisper",
    "httpx",
)


@dataclass(frozen=True, slots=True)
class Import:
    file: Path
    line: int
    module: str

    @property
    def top(self) -> str:
        return self.module.partition(".")[0]

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line} imports {self.module}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_relative(package: str, level: int, module: str | None) -> str:
    """The absolute name of `from <level dots><module> import ...` inside `package`."""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(path: Path) -> list[Import]:
    return scan(path.read_text(encoding="utf-8"), path, package_of(path))


def scan(source: str, path: Path, package: str) -> list[Import]:
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                name = resolve_relative(package, node.level, node.module)
                found.append(Import(path, node.lineno, name))
            elif node.module is not None:
                found.append(Import(path, node.lineno, node.module))
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(Import(path, node.lineno, first.value))
    return found


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def files_of(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def imports_in(layer: str) -> list[Import]:
    return [imp for path in files_of(layer) for imp in imports_of(path)]


@pytest.mark.parametrize("layer", ["engine", "actors", "adapters"])
def test_layer_has_python_files(layer: str) -> None:
    assert files_of(layer), f"{layer}/ has no Python files: the scan would prove nothing"


def test_engine_imports_only_the_stdlib_and_itself() -> None:
    bad = [
        str(i)
        for i in imports_in("engine")
        if i.top != "engine" and (i.top not in STDLIB or i.top in FRAMEWORKS)
    ]
    assert bad == []


def test_engine_imports_no_framework_by_name() -> None:
    # Spelled out too, so a framework shadowing a stdlib name cannot slip through.
    bad = [str(i) for i in imports_in("engine") if i.top in (*FRAMEWORKS, *LAYERS[1:])]
    assert bad == []


ACTORS_THIRD_PARTY = frozenset({"transitions", "anyio", "opentelemetry"})


def test_actors_import_engine_stdlib_and_few_libraries() -> None:
    allowed = {"engine", "actors"} | STDLIB | ACTORS_THIRD_PARTY
    bad = [str(i) for i in imports_in("actors") if i.top not in allowed]
    assert bad == []


def test_actors_use_the_opentelemetry_api_only() -> None:
    bad = [
        str(i)
        for i in imports_in("actors")
        if i.module.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))
    ]
    assert bad == []


def test_actors_never_import_adapters_or_specs() -> None:
    bad = [str(i) for i in imports_in("actors") if i.top in {"adapters", "specs"}]
    assert bad == []


def test_specs_import_engine_actors_stdlib_hypothesis_transitions_only() -> None:
    allowed = {"engine", "actors", "specs", "hypothesis", "transitions"} | STDLIB
    bad = [str(i) for i in imports_in("specs") if i.top not in allowed]
    assert bad == []


def test_specs_never_import_adapters() -> None:
    assert [str(i) for i in imports_in("specs") if i.top == "adapters"] == []


# -- inside adapters/: technology packages, the composition root, the entry points ---------

ROOT_PACKAGES = frozenset({"bootstrap", "entrypoints"})
"""`adapters.bootstrap` (settings, the one wiring function) and `adapters.entrypoints` (one
module per command); every other package of adapters/ is one technology."""


def adapters_package(module: str) -> str | None:
    """`storage` for `adapters.storage.sqlite`; None for what is not inside a package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "adapters" else None


def technology_packages() -> list[str]:
    return sorted(
        p.name
        for p in (ROOT / "adapters").iterdir()
        if (p / "__init__.py").is_file() and p.name not in ROOT_PACKAGES
    )


def test_adapters_holds_packages_only() -> None:
    loose = [p.name for p in (ROOT / "adapters").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "a module of adapters/ belongs in a technology package, or in bootstrap"
    assert {"storage", "llm", "stt", "telegram", "admin", "observability"} <= set(
        technology_packages()
    )


def _adapter_modules() -> list[tuple[Path, str]]:
    """(file, its package under adapters/) for every module below adapters/<package>/."""
    found = []
    for path in files_of("adapters"):
        package = adapters_package(module_name(path) + ("._" if path.name == "__init__.py" else ""))
        if package is not None:
            found.append((path, package))
    return found


def test_technology_packages_never_import_the_root_or_the_entry_points() -> None:
    bad = [
        str(i)
        for path, package in _adapter_modules()
        if package not in ROOT_PACKAGES
        for i in imports_of(path)
        if adapters_package(i.module + ".") in ROOT_PACKAGES
        or i.module in {"adapters.bootstrap", "adapters.entrypoints"}
    ]
    assert bad == []


def test_only_bootstrap_imports_more_than_one_technology_package() -> None:
    technologies = set(technology_packages())
    bad = []
    for path, package in _adapter_modules():
        if package == "bootstrap":
            continue
        used = {
            adapters_package(i.module + ".")
            for i in imports_of(path)
            if adapters_package(i.module + ".") in technologies
        } - {package}
        allowed = 1 if package == "entrypoints" else 0  # a command may use one technology
        if len(used) > allowed:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(u for u in used if u)}")
    assert bad == []


def test_the_layout_rules_see_a_violation() -> None:
    # The scan must notice what a careless edit would add.
    probe = "from adapters.bootstrap.wiring import open_app\nfrom adapters.llm import chain\n"
    path = ROOT / "adapters" / "telegram" / "probe.py"
    found = {adapters_package(i.module + ".") for i in scan(probe, path, "adapters.telegram")}
    assert found == {"bootstrap", "llm"}
    assert adapters_package("adapters.telegram.service") == "telegram"
    assert adapters_package("adapters.storage.") == "storage"
    assert adapters_package("adapters") is None


def test_every_layer_parses() -> None:
    for layer in LAYERS:
        for path in files_of(layer):
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# The scanner itself: it must see what a careless edit would add.
SAMPLE = """
import os, json as j
from engine import domain
if False:
    from adapters.bootstrap.wiring import Templates
def late():
    import aiohttp
    from opentelemetry.sdk.trace import TracerProvider
class C:
    def m(self):
        importlib.import_module("pymongo")
from . import sibling
from ..engine.ports import Clock
"""


def test_scanner_finds_nested_relative_and_dynamic_imports() -> None:
    seen = {i.module for i in scan(SAMPLE, ROOT / "actors" / "probe.py", "actors")}
    assert {
        "os",
        "json",
        "engine",
        "adapters.bootstrap.wiring",
        "aiohttp",
        "opentelemetry.sdk.trace",
        "pymongo",
        "actors",
        "engine.ports",  # `..engine.ports` from actors/ climbs to the root
    } <= seen


def test_relative_imports_resolve_against_their_package() -> None:
    assert package_of(ROOT / "adapters" / "llm" / "openai_http.py") == "adapters.llm"
    assert package_of(ROOT / "adapters" / "llm" / "__init__.py") == "adapters.llm"
    assert resolve_relative("adapters.llm", 1, "x") == "adapters.llm.x"
    assert resolve_relative("adapters.llm", 2, "app") == "adapters.app"
    assert resolve_relative("adapters.llm", 1, None) == "adapters.llm"
