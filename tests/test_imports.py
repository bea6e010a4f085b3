"""Every module of the package imports on its own: no import cycle can hide behind an import order."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mamol"

# In one fresh interpreter: for each module, forget every mamol module imported so far, then import it alone.
SCRIPT = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "mamol" or m.startswith("mamol.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{name}: {type(err).__name__}: {err}")
print("\\n".join(failed) or "ok")
"""


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = module_names()
    assert "mamol.data.base" in names and "mamol.methods.mamol" in names and len(names) > 30
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok", proc.stdout


# The package's layers, lowest first: a module may import its own layer and those below, never one above
# (STYLE 12). The longest matching prefix decides a module's layer.
LAYERS = (
    ("mamol", "mamol.distributed", "mamol.errors", "mamol.files", "mamol.locks", "mamol.tasks"),
    ("mamol.missing", "mamol.settings", "mamol.metrics", "mamol.confusion", "mamol.cli", "mamol.figures",
     "mamol.curves"),
    ("mamol.data",),
    ("mamol.conversion",),  # the writing side: imports the catalogue; the training side never imports it
    ("mamol.models",),
    ("mamol.methods",),
    ("mamol.optim", "mamol.checkpoint", "mamol.module"),
    ("mamol.runs",),
    ("mamol.train",),
    ("mamol.experiments",),
    ("mamol.experiment", "mamol.observers", "mamol.commands", "mamol.convert", "mamol.demo", "mamol.bench",
     "mamol.plans", "mamol.__main__"),
)


def layer_of(module: str) -> int:
    matches = [(len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of tests/test_imports.py::LAYERS"
    return max(matches)[1]


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, at any depth (``from mamol import runs`` counts as ``mamol.runs``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out & known


def test_imports_flow_one_way():
    names = set(module_names())
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        upward += [f"{module} -> {t}" for t in sorted(imported_modules(path, names)) if layer_of(t) > layer_of(module)]
    assert upward == []


def test_an_upward_import_is_found(tmp_path):
    source = tmp_path / "train.py"
    source.write_text("from mamol.experiments import tracking\nfrom mamol import runs\n")
    found = imported_modules(source, {"mamol.experiments", "mamol.experiments.tracking", "mamol.runs"})
    assert found == {"mamol.experiments", "mamol.experiments.tracking", "mamol.runs"}
    assert layer_of("mamol.experiments.tracking") > layer_of("mamol.train") > layer_of("mamol.runs")


def test_the_training_side_never_imports_conversion():
    """Writing data and reading it are two rooms (STYLE 14): nothing but the entry points imports mamol.conversion."""
    names = set(module_names())
    entry_points = set(LAYERS[-1])
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module.startswith("mamol.conversion") or module in entry_points:
            continue
        importers += [f"{module} -> {t}" for t in imported_modules(path, names) if t.startswith("mamol.conversion")]
    assert importers == []
