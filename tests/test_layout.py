"""The package's shape holds: layers import downward only, cohort building never imports torch, and the
commands users type (python -m ..., console entry points, scripts/build_cohort.py) still resolve."""
from __future__ import annotations

import ast
import configparser
import importlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "egan_med")
# Data flows one way: config -> cohort -> data -> models -> engine -> evaluation -> deploy -> commands (top-level modules).
LAYERS = (("config", "io", "image_formats", "xrv", "cli"), ("cohort",), ("data",), ("models",), ("engine",), ("evaluation",),
          ("deploy",))
COMMANDS = len(LAYERS)  # train, evaluate, predict, export, cohort_cli, bundle: may import any layer


def _layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if first in names), COMMANDS)


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), REPO)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def _imports(module: str, path: str) -> list[tuple[str, int]]:
    """(imported egan_med module, line) for every import in the file, function-level ones included."""
    tree, found = ast.parse(open(path, encoding="utf-8").read()), []
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("egan_med")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "egan_med":  # from egan_med import x: the module egan_med.x
                found += [(f"egan_med.{a.name}", node.lineno) for a in node.names]
            elif base.startswith("egan_med"):
                found.append((base, node.lineno))
    return found


def test_no_module_imports_upward():
    upward = [f"{m} (layer {_layer(m)}) imports {target} (layer {_layer(target)}) at line {line}"
              for m, path in _modules().items() for target, line in _imports(m, path) if _layer(target) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_every_module_is_in_a_layer_or_a_command():
    top_level = {m.split(".")[1] for m in _modules() if m.count(".") >= 1}
    commands = top_level - {n for names in LAYERS for n in names}
    assert commands <= {"train", "evaluate", "predict", "export", "cohort_cli", "bundle"}, commands


def test_cohort_building_imports_no_torch():
    code = ("import sys; import egan_med.cohort, egan_med.cohort.builder, egan_med.cohort.sources, egan_med.cohort.splits, "
            "egan_med.cohort_cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_console_entry_points_resolve():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    points = [line.split("=", 1)[1].strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines()
              if "=" in line]
    assert len(points) >= 6
    for point in points:
        module, func = point.split(":")
        assert callable(getattr(importlib.import_module(module), func)), point


@pytest.mark.parametrize("cmd", [["-m", "egan_med.train", "--help"], ["-m", "egan_med.evaluate", "--help"],
                                 ["-m", "egan_med.predict", "--help"], ["-m", "egan_med.export", "--help"],
                                 ["-m", "egan_med.data.cache_admin", "--help"], ["scripts/build_cohort.py", "--help"]])
def test_commands_run(cmd):
    done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-500:]
