"""The package's import graph (read with `ast`, function-local imports included) has no upward edge and no cycle."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import-name prefix -> folder in the repository (`engines/` installs as `tadsr_cli.engines`, see pyproject.toml).
SOURCES = {"tadsr_cli.engines": ROOT / "engines", "tadsr_cli": ROOT / "tadsr_cli"}
# Bottom to top; a module may import only from its own layer or a lower one. `eval` and `train` sit beside
# the pipeline and use it (eval scores what the Upscaler produces; training reads images with its reader);
# train also uses eval's metrics for validation.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("tadsr_cli.base", "tadsr_cli")),  # "tadsr_cli": the package root itself (only `__version__`)
    ("models", ("tadsr_cli.models",)),
    ("engines", ("tadsr_cli.engines",)),
    ("pipeline", ("tadsr_cli.pipeline",)),
    ("eval", ("tadsr_cli.eval",)),
    ("train", ("tadsr_cli.train",)),
    ("commands", ("tadsr_cli.commands",)),
    ("cli", ("tadsr_cli.cli", "tadsr_cli.__main__")),
]
# Upward edges still to be removed, by (importer, imported); each entry must still exist (the test says when not).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "tadsr_cli" and name.startswith("tadsr_cli.engines"):
                continue
            modules.setdefault(name, path)
    return modules


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imported_names(name: str) -> Iterator[tuple[str, int]]:
    """Every module `name` imports (anywhere in the file), resolved to the project module that provides it."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno
                break  # `from a.b import c`: the first resolvable target is the module actually read


def _graph() -> dict[str, dict[str, int]]:
    return {name: dict(_imported_names(name)) for name in MODULES}


def _layer(name: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, rank): the longest prefix wins
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # The root prefix names the root module only: a new top-level module must be given a layer.
            if name == prefix or (prefix != "tadsr_cli" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank)
    assert best is not None, f"{name} belongs to no layer; add its package to LAYERS"
    return best[1]


def test_every_module_has_a_layer_and_the_graph_is_not_empty():
    graph = _graph()
    assert "tadsr_cli.engines.torch_engine" in graph and "tadsr_cli.base.errors" in graph
    assert sum(len(v) for v in graph.values()) > 50
    for name in graph:
        _layer(name)


def test_no_upward_import():
    upward: set[tuple[str, str]] = set()
    lines: list[str] = []
    for src, targets in _graph().items():
        src_rank = _layer(src)
        for dst, lineno in targets.items():
            dst_rank = _layer(dst)
            if dst_rank > src_rank:
                upward.add((src, dst))
                if (src, dst) not in KNOWN_UPWARD:
                    lines.append(f"{MODULES[src].relative_to(ROOT)}:{lineno}: {src} -> {dst} "
                                 f"({LAYERS[src_rank][0]} imports {LAYERS[dst_rank][0]})")
    assert not lines, "imports that point up the layers:\n" + "\n".join(sorted(lines))
    assert KNOWN_UPWARD <= upward, f"fixed, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_installed_packages_match_the_folders():
    """pyproject's explicit package list (needed for the engines mapping) names every package folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"tadsr_cli.engines": "engines"}
    on_disk = {name for name in MODULES if _is_package(name)}
    assert set(config["packages"]) == on_disk


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_layer_has_modules(layer):
    assert any(LAYERS[_layer(m)][0] == layer for m in MODULES)


def test_engines_install_under_the_project_name(tmp_path):
    """Installed (editable here), `tadsr_cli.engines` is the repository's `engines/` folder and no top-level
    `engines` package leaks into site-packages, where it would clash with another project's."""
    spec = importlib.util.find_spec("tadsr_cli.engines")
    assert spec is not None and Path(spec.origin) == ROOT / "engines" / "__init__.py"
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('engines') is None else 3)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, "a top-level `engines` package is importable outside the checkout"


def test_wheel_holds_engines_under_the_project_name(tmp_path):
    """A regular wheel (built from a copy of the tree, so no build/ folder appears in the checkout)."""
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tadsr_cli", "engines"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("tadsr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tadsr_cli/engines/__init__.py" in names and "tadsr_cli/engines/torch_engine.py" in names
    assert "tadsr_cli/base/errors.py" in names and "tadsr_cli/weights/tadsr-tiny-x4.safetensors" in names
    assert not [n for n in names if n.startswith("engines/")]


def test_tests_import_the_project_plainly():
    """A broken project import must fail the tests, not skip them."""
    offenders = [f"{path.name}:{n}" for path in sorted((ROOT / "tests").glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "importorskip(" in line and ("tadsr_cli" in line or "\"engines" in line)
                 and path.name != Path(__file__).name]
    assert offenders == []


# Modules still over the limit, for their owners to split; each entry must still be over it.
KNOWN_OVERSIZE: set[str] = set()
MAX_LINES = 500


def test_modules_are_small_and_say_their_job():
    too_big, no_doc = set(), []
    for name, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES:
            too_big.add(name)
        if text.strip() and ast.get_docstring(ast.parse(text)) is None and not name.endswith("__main__"):
            no_doc.append(name)
    assert too_big - KNOWN_OVERSIZE == set(), f"modules over {MAX_LINES} lines: {sorted(too_big - KNOWN_OVERSIZE)}"
    assert KNOWN_OVERSIZE <= too_big, f"now small enough, remove from KNOWN_OVERSIZE: {sorted(KNOWN_OVERSIZE - too_big)}"
    assert no_doc == [], f"modules whose first line does not say their job: {no_doc}"
