"""The platform's imports go one way: no circle among `ems` modules.

A circle at module level fails at import time, so circles hide behind imports inside
functions (the outbox, its relay, the audit writer and reader and the tasks once formed
one that way). This reads every module's imports and looks for a cycle among the
module-level ones, and checks that the outbox reaches neither its relay nor the tasks,
at any level.
"""

import ast
from pathlib import Path

import ems

PACKAGE = Path(ems.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, *, everywhere: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree) if everywhere else tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module == "ems" or module.startswith("ems.")}


def import_graph(*, everywhere: bool = False) -> dict[str, set[str]]:
    paths = [path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts]
    modules = {_module_name(path): path for path in paths}
    return {
        name: {target for target in _imports(path, name, everywhere=everywhere) if target in modules} - {name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target == "ems" or node == "ems":
                continue  # the package itself only re-exports the Celery app
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_circle_among_the_platforms_modules():
    assert _cycle(import_graph()) == []


def test_the_outbox_imports_neither_its_relay_nor_the_tasks():
    graph = import_graph(everywhere=True)
    assert graph["ems.outbox"] & {"ems.outbox_relay", "ems.tasks", "ems.audit"} == set()
    assert "ems.audit_reader" not in graph["ems.outbox_relay"]


def test_a_circle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
