"""The code's layout rules (docs/ARCHITECTURE.md), checked on the source: short functions, no import
cycle between packages, and pixels known only where the modality seam allows."""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import autotransfer

ROOT = Path(autotransfer.__file__).parent
#: Functions over the limit that stay: the zoo's converters, one straight recipe each per network.
LONG_ALLOWED = {("zoo/module.py", "make_module"), ("zoo/minilm.py", "make_module")}
MAX_LINES = 60
#: Only these packages may know pixels, image shapes or file formats.
SEAM = ("modalities", "data", "backbones", "zoo", "testing")
PIXELS = re.compile(r"image_dataset|typical_image_side|decode_image|\(size, size|, 3\]")


def _sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    """``autotransfer.X`` of a dotted module name: its subpackage or top-level module."""
    return ".".join(module.split(".")[:2])


def test_no_function_is_over_60_lines():
    long = [(path, node.name, node.end_lineno - node.lineno + 1) for path, tree in _sources().items()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES and (path, node.name) not in LONG_ALLOWED]
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def _imports() -> dict[str, set[str]]:
    """package -> the packages its modules import, function bodies included."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path, tree in _sources().items():
        module = "autotransfer." + path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autotransfer"):
                targets = ([f"autotransfer.{a.name}" for a in node.names] if node.module == "autotransfer"
                           else [node.module])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("autotransfer.")]
            else:
                continue
            for target in targets:
                if _package(target) != _package(module) and _package(target) != "autotransfer":
                    edges[_package(module)].add(_package(target))
    return edges


def test_no_import_cycle_between_packages():
    edges = _imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    cycles = sorted(a for a in edges if a in reach(a))
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_a_package_that_imports_itself_back_is_caught(monkeypatch):
    real = _imports()
    looped = {**real, "autotransfer.final": real["autotransfer.final"] | {"autotransfer.pipeline"}}
    monkeypatch.setattr(f"{__name__}._imports", lambda: looped)
    try:
        test_no_import_cycle_between_packages()
    except AssertionError as exc:
        assert "autotransfer.final" in str(exc)
    else:
        raise AssertionError("a cycle through final and pipeline went unnoticed")


def test_only_the_seam_packages_know_pixels():
    leaks = [path for path in _sources() if path.split("/")[0] not in SEAM
             and PIXELS.search((ROOT / path).read_text())]
    assert not leaks, f"image code outside {SEAM}: {leaks}"
