"""The package's import graph: no cycles, and the layering rule of DESIGN.md.

Every module of the package is parsed (nothing is imported), and every import, at module
level or inside a function, becomes an edge. ``models/`` and ``service/`` never reach
``addon/``, ``ops/``, ``panels/``, ``cli/`` or Blender; no module imports one that
imports it back, directly or through others.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("addon", "ops", "panels", "models", "service", "cli")
BLENDER_MODULES = ("bpy", "bpy_extras", "mathutils", "addon_utils", "bmesh", "gpu")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["anirender", *parts])


def _package_files() -> list[Path]:
    files = [REPO / n for n in ("__init__.py", "errors.py", "registration.py", "words.py")]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def _imports(path: Path, modules: set[str]):
    """(imported module, line, inside a function) for every import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    inner = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        local = id(node) in inner
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, local
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in modules else target), node.lineno, local


@pytest.fixture(scope="module")
def graph() -> dict:
    files = _package_files()
    modules = {_module_name(f) for f in files}
    edges = {}
    for path in files:
        edges[_module_name(path)] = [
            (target, line, local, path) for target, line, local in _imports(path, modules)
        ]
    return edges


def test_models_and_service_never_reach_blender_or_the_addon(graph):
    forbidden = tuple(f"anirender.{p}" for p in ("addon", "ops", "panels", "cli"))
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for module, imports in graph.items()
        if module.startswith(("anirender.models", "anirender.service"))
        for target, line, _local, path in imports
        if target.startswith(forbidden) or target.split(".")[0] in BLENDER_MODULES
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph):
    nodes = set(graph)
    adjacency = {
        m: sorted({t for t, *_ in imports if t in nodes and t != m}) for m, imports in graph.items()
    }
    # Tarjan's strongly connected components
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _has_reason(lines: list[str], index: int) -> bool:
    """A comment on the import's line, or above it in its block of imports."""
    if "#" in lines[index]:
        return True
    for above in reversed(lines[:index]):
        text = above.strip()
        if text.startswith("#"):
            return True
        if not text.startswith(("from ", "import ")) and not text.endswith((",", "(")):
            return False
    return False


def test_imports_inside_functions_say_why(graph):
    """An import inside a function keeps something heavy (torch, bpy, an optional
    package) off start-up; a package-internal one says so in a comment beside it."""
    silent = []
    for imports in graph.values():
        for target, line, local, path in imports:
            if not local or not target.startswith("anirender"):
                continue
            lines = path.read_text().splitlines()
            if not _has_reason(lines, line - 1):
                silent.append(f"{path.relative_to(REPO)}:{line}: {lines[line - 1].strip()}")
    assert not silent, "\n".join(silent)


def test_every_package_is_listed_for_pip_install():
    """A plain ``pip install .`` (no editable finder) ships only the packages pyproject lists."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(["anirender", *init.parent.relative_to(REPO).parts])
        for init in _package_files()
        if init.name == "__init__.py"
    }
    assert found == listed
