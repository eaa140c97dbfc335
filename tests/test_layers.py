"""The import graph of ``speech/``: every package imports only packages on its own floor's level or below
(never a sibling on the same floor), and no module imports itself back through others. Function-level
imports count as much as module-level ones, so an import deferred into a function cannot hide a cycle or an
upward dependency. And ``import speech.inference`` does not import Lightning."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "speech"

# The floors of speech/, lowest first. A package may import packages on lower floors, never a package on its
# own floor or above: so siblings (audio and text; lit and inference) stay independent of each other.
LAYERS = [
    {"tensors", "profiling"},  # padding and masks; benchmark timing
    {"audio", "text"},  # signals (I/O, log-mel, WORLD, prosody) and text (front-end, BPE, WER normalizer)
    {"modules"},  # building blocks of the models (LoRA included)
    {"models"},  # plain nn.Modules
    {"checkpoints"},  # reading checkpoint files, rebuilding their models; LoRA adapters from modules.lora
    {"data"},  # corpora, manifests, batching, feature caches (keyed by checkpoint hashes)
    {"metrics"},  # WER, SIM, ASR and speaker backends, scoring of test sets, corpus separability
    {"lit", "inference"},  # training and inference: neither imports the other (inference: no Lightning)
    {"serve"},  # the HTTP server over inference; never lit (see NEVER)
    {"runner"},  # the main job's task graph: nothing of speech imports it
]
FLOOR = {name: level for level, names in enumerate(LAYERS) for name in names}
# Packages a package never imports though they are on a lower floor: the server runs without Lightning.
NEVER = {"serve": {"lit"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The ``speech`` modules that module ``name`` imports anywhere in its body (``from package import
    module`` counts as the module, ``from module import name`` as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # an attribute of a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def floor_package(name: str) -> str | None:
    """The package of ``speech`` a module is in (``speech.data.cache`` -> ``data``); None for ``speech``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_floor():
    packages = {floor_package(name) for name in MODULES} - {None}
    assert packages <= set(FLOOR), f"add these to LAYERS: {sorted(packages - set(FLOOR))}"
    assert set(FLOOR) <= packages, f"LAYERS names packages that do not exist: {sorted(set(FLOOR) - packages)}"


def test_packages_import_only_lower_floors():
    upward = [
        f"{name} imports {target} ({floor_package(name)} on floor {FLOOR[floor_package(name)]}, "
        f"{floor_package(target)} on floor {FLOOR[floor_package(target)]})"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if floor_package(name) and floor_package(target) and floor_package(name) != floor_package(target)
        if FLOOR[floor_package(target)] >= FLOOR[floor_package(name)]
    ]
    assert not upward, "imports that are not of a lower floor:\n" + "\n".join(upward)


def test_packages_skip_the_floors_they_must_not_import():
    found = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if floor_package(target) in NEVER.get(floor_package(name), ())
    ]
    assert not found, "imports that NEVER forbids:\n" + "\n".join(found)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_sees_function_level_imports_and_cycles():
    """The checks can fail: a deferred import is an edge, and a loop through it is found."""
    assert "speech.audio.world" in GRAPH["speech.audio.prosody"]
    assert "speech.text.bpe" in GRAPH["speech.lit.resolvers"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["speech.inference", "speech.checkpoints", "speech.serve.app"])
def test_inference_does_not_import_lightning(module):
    code = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing {module} imports {out.stdout.strip()}"
