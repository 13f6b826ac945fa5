"""The house rules a newcomer relies on, checked on the source: no module over 400 lines, no
import cycle (imports inside functions count), no ``_private`` name of one module used by
another, and the worker imports nothing of the benchmark, the offline side or torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "encoders", "interest_state")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of a module, anywhere."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _edges() -> dict[str, set[str]]:
    return {
        module: {t for t, _, _ in _imports(module) if t in MODULES and t != module}
        for module in MODULES
    }


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_every_package_and_its_rooms() -> None:
    assert {"streams.worker.agents", "streams.bench", "encoders.runtime.text"} <= set(MODULES)
    assert "streams.worker.app" in _edges()["streams.worker.runtime"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_400_lines() -> None:
    long = {
        module: n
        for module, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    assert _cycles(_edges()) == []


def test_no_private_name_crosses_modules() -> None:
    crossings = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if target.split(".")[0] not in PACKAGES or target == module:
                continue
            private_module = any(part.startswith("_") and not part.startswith("__")
                                 for part in target.split("."))
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if private_module or private_name:
                crossings.append(f"{module}:{line} imports {target}.{name or ''}")
    assert crossings == []


def test_no_private_attribute_of_another_module_is_reached() -> None:
    reached = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {  # local names bound to our own modules: ``import a.b as c``, ``from a import b``
            (alias.asname or alias.name.split(".")[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
            if (f"{_resolve(module, node)}.{alias.name}" if isinstance(node, ast.ImportFrom)
                else alias.name).split(".")[0] in PACKAGES
        }
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                reached.append(f"{module}:{node.lineno} {node.value.id}.{node.attr}")
    assert reached == []


@pytest.mark.parametrize(
    ("entry", "banned"),
    [
        ("streams.worker.runtime", ("streams.bench", "streams.offline", "torch", "transformers")),
        ("streams.cli", ("streams.bench", "streams.offline", "streams.worker", "torch")),
        ("encoders", ("encoders.build", "torch", "transformers", "faust", "aiokafka")),
    ],
)
def test_importing_a_room_loads_nothing_it_does_not_need(
    entry: str, banned: tuple[str, ...]
) -> None:
    code = (
        f"import sys, {entry}; "
        f"print('\\n'.join(m for m in sys.modules if m.startswith({banned!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert loaded == []
