"""The package's shape: imports point one way (no loops, also through function-level
imports) and no module, class or function grows past what a reader takes in at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "trajplan"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, wherever in the file the import is."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_find_cycle_known_answers() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": set(), "b": {"b2"}, "b2": {"b"}}) == ["b", "b2", "b"]


def test_the_package_has_no_import_loop() -> None:
    graph = import_graph()
    assert (
        "trajplan.planner.search" in graph
        and "trajplan.model.gpt" in graph["trajplan.planner.search"]
    )
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded to the package's rooms: trajplan.X.Y -> X (a root module is
    a room of its own), edges between rooms only."""

    def room(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    rooms: dict[str, set[str]] = {}
    for v, targets in graph.items():
        if v == "trajplan":  # the package's __init__ re-exports; not a room
            continue
        rooms.setdefault(room(v), set()).update(
            room(w) for w in targets if w != "trajplan" and room(w) != room(v)
        )
    return rooms


def test_package_graph_known_answer() -> None:
    graph = {"trajplan.a.x": {"trajplan.b.y"}, "trajplan.b.y": {"trajplan.c"}, "trajplan.c": set()}
    assert package_graph(graph) == {"a": {"b"}, "b": {"c"}, "c": set()}
    graph["trajplan.c"] = {"trajplan.a.z"}
    graph["trajplan.a.z"] = set()  # a -> b -> c -> a: a loop between rooms, not modules
    assert find_cycle(package_graph(graph)) == ["a", "b", "c", "a"]


def test_the_packages_import_one_way() -> None:
    """Also between rooms (trajplan/training, trajplan/baselines, ...): training -> evaluation
    -> runs -> baselines -> training was such a loop, each module edge fine on its own. Run
    formats live in trajplan/runs, which the rooms that write or read runs import, never the
    other way; baselines and the ensemble train with training's minibatch loop."""
    rooms = package_graph(import_graph())
    assert "model" in rooms["planner"]
    assert not rooms["runs"] & {"baselines", "training", "evaluation", "prediction", "hub"}
    assert "runs" in rooms["baselines"] and "training" in rooms["baselines"]
    assert "baselines" not in rooms["training"]
    assert find_cycle(rooms) is None, " -> ".join(find_cycle(rooms) or [])


def test_sizes_stay_readable() -> None:
    """Modules at most 400 lines, classes 170, functions 80 (the CLI's option lists aside)."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.read_text()
        if len(src.splitlines()) > 400:
            too_long.append(f"{path.name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > 170:
                too_long.append(f"{path.name}: class {node.name} {size} lines")
            if isinstance(node, ast.FunctionDef) and size > 80 and "cli" not in path.parts:
                too_long.append(f"{path.name}: {node.name}() {size} lines")
    assert not too_long, too_long
