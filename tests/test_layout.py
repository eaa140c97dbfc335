"""The layout the README promises ("Layout"): one CLI dialect and configs grouped by kind.

- ``configs/`` holds group folders only; ``configs/entry/<name>.yaml`` is the config of the command
  ``<name>.py`` (train.py, eval/seedtts_eval.py, scripts/encode.py, ...), global and with absolute groups.
- Every command under ``scripts/`` and ``eval/`` is a Hydra entry point, except the benchmarks in
  ``scripts/bench/`` (argparse, each says why) and the job graphs, which pass their arguments on to
  Hydra commands.
"""

import ast
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SCRIPT_DIRS = ("scripts", "eval")
# Task graphs: they run Hydra commands and hand them their own arguments (scripts/run_tiny.sh, jobs/).
JOB_GRAPHS = {
    "scripts/run_tiny.py",
    *(f"scripts/jobs/{p.name}" for p in (ROOT / "scripts/jobs").glob("*.py")),
}
SCRIPT_SUBDIRS = {"bench", "corpus", "jobs"}


def commands() -> list[Path]:
    """Every Python script a user runs: the top-level entry points and those in scripts/ and eval/."""
    found = [ROOT / "train.py", ROOT / "infer.py", ROOT / "serve.py"]
    for folder in SCRIPT_DIRS:
        found += sorted((ROOT / folder).rglob("*.py"))
    return [p for p in found if "__pycache__" not in p.parts]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def hydra_main(path: Path) -> dict[str, str] | None:
    """The keyword arguments of the script's ``@hydra.main(...)``, or None without one."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "hydra.main":
                    return {kw.arg: ast.literal_eval(kw.value) for kw in deco.keywords}
    return None


def imports_argparse(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
    return False


def test_configs_root_holds_only_groups():
    loose = sorted(p.name for p in CONFIGS.iterdir() if not p.is_dir())
    assert not loose, f"configs/ holds only group folders; move {loose} to configs/entry/ or a group"
    assert (CONFIGS / "entry").is_dir()


def test_scripts_folder_has_its_named_subfolders():
    subdirs = {p.name for p in (ROOT / "scripts").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert subdirs == SCRIPT_SUBDIRS, (
        f"scripts/ has {sorted(subdirs)}; the README names {sorted(SCRIPT_SUBDIRS)}"
    )


@pytest.mark.parametrize("script", commands(), ids=rel)
def test_every_command_speaks_hydra_except_the_benchmarks(script):
    name = rel(script)
    if name.startswith("scripts/bench/"):
        return  # flags for benchmarks: the README's "Layout" and each benchmark's docstring say why
    assert not imports_argparse(script), f"{name} parses arguments with argparse: make it a Hydra entry point"
    if name in JOB_GRAPHS:
        return
    text = script.read_text(encoding="utf-8")
    if "__main__" not in text:
        return  # a module other scripts import, not a command
    args = hydra_main(script)
    assert args is not None, f"{name} is a command without @hydra.main"
    assert (script.parent / args["config_path"]).resolve() == CONFIGS, f"{name}: config_path is not configs/"
    assert args["config_name"] == f"entry/{script.stem}", f"{name} must read configs/entry/{script.stem}.yaml"


def test_every_entry_config_has_its_command():
    stems = {p.stem for p in commands() if hydra_main(p)}
    orphans = sorted(p.name for p in (CONFIGS / "entry").glob("*.yaml") if p.stem not in stems)
    assert not orphans, f"configs/entry/ holds configs no command reads: {orphans}"


ENTRY_CONFIGS = sorted((CONFIGS / "entry").glob("*.yaml"))


@pytest.mark.parametrize("config", ENTRY_CONFIGS, ids=lambda p: p.stem)
def test_entry_configs_are_global_with_absolute_groups(config):
    text = config.read_text(encoding="utf-8")
    assert text.startswith("# @package _global_\n"), f"{config.name}: first line must be # @package _global_"
    for entry in yaml.safe_load(text).get("defaults", []):
        if entry == "_self_":
            continue
        (key,) = entry
        assert key.removeprefix("override ").startswith("/"), (
            f"{config.name}: defaults entry {key!r} is read relative to configs/entry/; write /{key}"
        )
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(f"entry/{config.stem}")
    assert "entry" not in cfg and "defaults" not in cfg  # its keys are top-level, its groups were found
