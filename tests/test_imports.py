"""The package's modules depend on each other one way: no import cycle, and no module reads
another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "eventlog"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file that runs, at module
    level or inside a function; ``if TYPE_CHECKING:`` blocks never run, so they are left out."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                names = [alias.name for alias in child.names]
                # ``from . import web`` imports the module eventlog.web
                submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
                found.extend((m, []) for m in submodules)
                found.append((base, [n for n in names if f"{base}.{n}" not in modules]))
            visit(child)

    visit(ast.parse(path.read_text("utf-8")))
    return found


def _graph() -> dict[str, dict[str, list[str]]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, list[str]]] = {}
    for module, path in files.items():
        edges: dict[str, list[str]] = {}
        for target, names in _imports(path, set(files)):
            if target in files and target != module:
                edges.setdefault(target, []).extend(names)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_the_graph_sees_module_and_function_level_imports():
    """The walk finds imports inside functions and ``from . import x`` (so the next test can
    fail): eventlog.serving imports eventlog.web inside a function."""
    graph = _graph()
    assert "eventlog.web" in graph["eventlog.serving"]
    assert "eventlog.storage.base" in graph["eventlog.storage.sqlite"]
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_the_packages_modules():
    """No module imports, directly or through others, one that imports it back, whether the
    import runs at load time or inside a function."""
    assert _cycles(_graph()) == []


def test_no_module_reads_another_modules_private_names():
    """``from .x import _name`` and ``x._name`` across modules are not used: what another
    module needs is public."""
    graph = _graph()
    private = sorted(
        f"{module} takes {name} from {target}"
        for module, edges in graph.items()
        for target, names in edges.items()
        for name in names
        if name.startswith("_") and not name.startswith("__")
    )
    for path in PACKAGE.rglob("*.py"):
        aliases = {
            alias.asname or alias.name
            for node in ast.walk(ast.parse(path.read_text("utf-8")))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                private.append(f"{_module_name(path)} reads {node.value.id}.{node.attr}")
    assert private == []


def _reach(graph: dict[str, dict[str, list[str]]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_models_and_the_wire_layer_stand_below_storage_and_http():
    """envelope, status, problems and codec (and what they import) import no storage module
    and not aiohttp: the library, the stores and the HTTP layer build on them, not around."""
    graph = _graph()
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for module in ("eventlog.envelope", "eventlog.status", "eventlog.problems", "eventlog.codec"):
        below = _reach(graph, module)
        assert not {m for m in below if m.startswith("eventlog.storage")}, module
        for name in below:
            imported = {target for target, _ in _imports(files[name], set(files))}
            assert not {t for t in imported if t.split(".")[0] == "aiohttp"}, (module, name)
