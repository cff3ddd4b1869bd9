"""The package's import graph points one way: every import (lazy ones inside functions included) goes to the same
layer or a lower one. The layers, lowest first:

0. ``errors``, ``runtime``, ``metrics``, the package itself (``__version__``)
1. ``cache``, ``video``, ``models``, ``datasets``: storage, decoding, networks, split files
2. ``data``: training items built from those
3. ``train``: the training engine
4. ``stages``, ``config``: what each stage does, and the resolver of its options (the two import each other)
5. ``report``: renders evaluated runs (reads ``stages.evaluate``); ``predict``: applies trained runs to new inputs
   (reads the stages' runs and models, renders like ``report``)
6. ``commands``: wire the stages and render
7. ``cli``, ``options``, ``__main__``: the command line

An "upward arrow" is an import of a higher layer; a lower layer that needs something from above takes it as an
argument (the pipelines take their report writer from ``commands``). The one exception is the public API's entry
point: ``actiontk.load`` is the package root's lazy alias of ``actiontk.predict.load`` (:data:`ENTRY_POINTS`)."""

from __future__ import annotations

import ast
from pathlib import Path

import actiontk

LAYERS = {
    "actiontk": 0, "errors": 0, "runtime": 0, "metrics": 0,
    "cache": 1, "video": 1, "models": 1, "datasets": 1,
    "data": 2,
    "train": 3,
    "stages": 4, "config": 4,
    "report": 5, "predict": 5,
    "commands": 6,
    "cli": 7, "options": 7, "__main__": 7,
}


# (importer, imported) pairs allowed to point upward: the package root's lazy ``actiontk.load``.
ENTRY_POINTS = {("actiontk", "actiontk.predict")}


def _part(module: str) -> str:
    """The layer name of a dotted module: ``actiontk.stages.extract`` -> ``stages``; ``actiontk`` -> ``actiontk``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path, module: str) -> set[str]:
    """Every ``actiontk`` module that ``path`` (the module ``module``) imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            # ``from actiontk import report`` imports the module actiontk.report: name it, not the package
            out.update(f"{base}.{a.name}" if base == "actiontk" else base for a in node.names)
    return {m for m in out if m == "actiontk" or m.startswith("actiontk.")}


def upward_arrows(package_dir: Path) -> list[tuple[str, str]]:
    """(importer, imported) for every import of a higher layer under ``package_dir`` (a folder named actiontk)."""
    arrows = []
    for path in sorted(package_dir.rglob("*.py")):
        module = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts).removesuffix(".__init__")
        src = _part(module)
        assert src in LAYERS, f"{module} is in no layer: add {src!r} to LAYERS in {__file__}"
        for target in sorted(imports(path, module)):
            dst = _part(target)
            if dst in LAYERS and LAYERS[dst] > LAYERS[src] and (module, target) not in ENTRY_POINTS:
                arrows.append((module, target))
    return arrows


def test_no_module_imports_a_higher_layer():
    arrows = upward_arrows(Path(actiontk.__file__).parent)
    assert arrows == [], "upward imports:\n" + "\n".join(f"  {a} -> {b}" for a, b in arrows)


def test_the_named_boundaries():
    """The boundaries the layers exist for, spelled out: nothing below ``report`` imports it or the command layer,
    and ``report`` does not import the command layer."""
    root = Path(actiontk.__file__).parent
    for below in ("stages", "cache", "models", "data", "datasets", "video", "train", "report"):
        banned = ("commands", "cli", "options") + (() if below == "report" else ("report",))
        for path in (root / below).rglob("*.py"):
            module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
            bad = [m for m in imports(path, module) if _part(m) in banned]
            assert not bad, f"{module} imports {bad}"


def test_an_upward_import_is_found(tmp_path: Path):
    """The checker sees top-level, lazy, relative and ``from actiontk import x`` imports of a higher layer."""
    pkg = tmp_path / "actiontk"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("from actiontk.errors import UserError\n")  # down: fine
    (pkg / "stages" / "a.py").write_text("from actiontk.report import build\n")
    (pkg / "stages" / "b.py").write_text("def f():\n    from actiontk import commands\n")
    (pkg / "stages" / "c.py").write_text("from ..cli import main\nfrom . import a\n")
    (pkg / "cache.py").write_text("import actiontk.data.clips\n")
    assert upward_arrows(pkg) == [
        ("actiontk.cache", "actiontk.data.clips"),
        ("actiontk.stages.a", "actiontk.report"),
        ("actiontk.stages.b", "actiontk.commands"),
        ("actiontk.stages.c", "actiontk.cli"),
    ]
