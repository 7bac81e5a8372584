"""Dependencies point one way (README, "Layout"): no import from a higher floor, no import cycle.

An ``ast`` walk over every application module, reading every import statement, including those inside
functions and ``if TYPE_CHECKING`` blocks: a lazy import is still a dependency. ``from package import name``
depends on ``package.name`` when that is a module and on the package (its ``__init__``) otherwise.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Floors, lowest first. A module may import its own app and any app on a lower floor; apps on one floor are
# independent of each other. Keep in step with the README's layout table.
FLOORS: dict[str, int] = {
    "config": 0,
    "localnet": 0,
    "gridtoken": 1,
    "meters": 2,
    "minting": 3,
    "protocols": 3,
    "certificates": 4,
    "matching": 5,
    "realtime": 6,
    "ops": 6,
}

# The project's wiring names every app: the URL tree, the ASGI/WSGI entry points and the Celery app.
WIRING = {"gridtoken.urls", "gridtoken.asgi", "gridtoken.wsgi", "gridtoken.celery"}

# Known violations still to remove, each with the reason it is here. The list only shrinks: the test fails when
# a listed violation is gone, so whoever removes one also removes its line.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def application_modules() -> dict[str, Path]:
    modules = {}
    for app in FLOORS:
        for path in sorted((ROOT / app).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The application modules that module ``name`` (at ``path``) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = application_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def app_of(module: str) -> str:
    return module.partition(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in graph.items()
        if module not in WIRING
        for target in targets
        if app_of(target) != app_of(module) and FLOORS[app_of(target)] >= FLOORS[app_of(module)]
    }


def cycles(graph: dict[str, set[str]]) -> dict[frozenset[str], list[str]]:
    """Strongly connected components of more than one module (Tarjan), each with one concrete cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return {frozenset(component): cycle_through(graph, component) for component in components}


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle from the component's first module back to itself (breadth-first inside it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def test_no_module_imports_from_a_higher_floor():
    found = upward_imports(import_graph())
    new = sorted(found - ALLOWED_UPWARD.keys())
    assert not new, "upward or sideways imports (see the README's layout floors):\n" + "\n".join(
        f"  {module} ({app_of(module)}, floor {FLOORS[app_of(module)]}) imports {target} "
        f"({app_of(target)}, floor {FLOORS[app_of(target)]})"
        for module, target in new
    )
    gone = sorted(ALLOWED_UPWARD.keys() - found)
    assert not gone, f"these allowed imports are gone; remove them from ALLOWED_UPWARD: {gone}"


def test_no_import_cycle():
    found = cycles(import_graph())
    new = {members: cycle for members, cycle in found.items() if members not in ALLOWED_CYCLES}
    assert not new, "import cycles (each: the shortest cycle, then every module caught in it):\n" + "\n".join(
        f"  {' -> '.join(cycle)}\n    {len(members)} modules: {', '.join(sorted(members))}"
        for members, cycle in new.items()
    )
    gone = [sorted(members) for members in ALLOWED_CYCLES.keys() - found.keys()]
    assert not gone, f"these allowed cycles are gone; remove them from ALLOWED_CYCLES: {gone}"


def test_every_application_package_has_a_floor():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == FLOORS.keys(), "give each top-level package a floor here and in the README's layout"


def test_the_walk_sees_lazy_relative_and_from_imports(tmp_path):
    modules = {name: tmp_path for name in ("meters", "meters.services", "meters.services.a", "minting.triggers")}
    source = tmp_path / "a.py"
    source.write_text(
        "from . import a as b\ndef f():\n    from minting import triggers\n    import minting.triggers.x\n"
    )
    assert imported("meters.services.b", source, modules) == {"meters.services.a", "minting.triggers"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {frozenset("abc"): ["a", "b", "c", "a"]}
