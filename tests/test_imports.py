"""The import graph of web/ and worker/, read with `ast` (nothing is imported to build it):
no cycles, not even through an import inside a function, and imports run one way (the style
guide's "Imports run one way"):

    web.api, web.dashboard, worker  ->  web.domain, web.settings

Every `import` and `from … import` counts, wherever it stands (module level, inside a function,
under `if TYPE_CHECKING:`); `from package import name` is an edge to `package.name` when that is
a module, and relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("web", "worker")

# The `flowgate` command is the process entry point: its `worker` subcommand starts the arq
# worker, so it alone may name worker.settings (inside that command, so `import web.cli` does
# not load the worker). Nothing else under web/ may import worker/.
WORKER_ENTRY_POINTS = {("web.cli", "worker.settings")}

LOWER_LAYERS = ("web.domain", "web.settings")
UPPER_LAYERS = ("web.api", "web.dashboard", "worker")

Graph = dict[str, set[str]]


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """This file reads source only: no PostgreSQL or Redis to clean (overrides conftest's)."""


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def modules_under(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` (a package is its
    __init__.py)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` if it is one of our modules, else the longest prefix that is (the module an
    attribute import lands in), else None (a third-party or standard module)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from … import` reads from: a relative one is resolved against the
    importing module's package (the module itself when it is a package's __init__)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]
) -> set[str]:
    """The modules of ours that one import statement loads."""
    if isinstance(node, ast.Import):
        return {t for alias in node.names if (t := _known(alias.name, modules))}
    base = _from_base(node, module, is_package)
    targets = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in modules:  # `from a.b import c`, c a module: an edge to a.b.c
            targets.add(submodule)
        elif (target := _known(base, modules)) is not None:  # c a name defined in a.b
            targets.add(target)
    return targets


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """module -> the modules of `packages` it imports anywhere in its source."""
    modules = modules_under(root, packages)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _targets(node, name, is_package, modules) - {name}
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (a -> b -> … -> a) for each group of modules that import each other
    (Tarjan's strongly connected components), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_one_cycle(graph, component) for component in components)


def _one_cycle(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _violations(graph: Graph) -> Iterator[str]:
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _within(module, LOWER_LAYERS) and _within(target, UPPER_LAYERS):
                yield f"{module} imports {target}"
            elif (
                _within(module, ["web"])
                and _within(target, ["worker"])
                and (module, target) not in WORKER_ENTRY_POINTS
            ):
                yield f"{module} imports {target} (web never imports worker)"


# --- the project ------------------------------------------------------------------------------


def test_no_module_of_web_or_worker_imports_itself_back() -> None:
    cycles = find_cycles(import_graph(ROOT, PACKAGES))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_run_from_the_callers_to_the_domain_and_never_from_web_to_worker() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert list(_violations(graph)) == []


def test_the_graph_covers_every_module_of_web_and_worker() -> None:
    graph = import_graph(ROOT, PACKAGES)
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    assert len(graph) == len(files)
    assert "web.domain.queue" in graph["worker.jobs"]  # `from web.domain import queue`
    assert "worker.steps" in graph["worker.engine"]  # `from worker.steps import RUNNERS`


# --- the detector itself ----------------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> None:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


def test_the_detector_finds_a_cycle_closed_inside_a_function(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "app/__init__.py": "from . import free\n",
            "app/kinds/__init__.py": (
                "def registry():\n    from app.kinds import alpha\n    return alpha\n"
            ),
            # `from . import x` in a package, a relative module import and a plain `import`.
            "app/kinds/alpha.py": "from . import beta\n",
            "app/kinds/beta.py": "from ..kinds import gamma\n",
            "app/kinds/gamma.py": "import app.kinds\n",
            "app/free.py": "from app.kinds.alpha import something\nimport os\n",
        },
    )

    graph = import_graph(tmp_path, ["app"])

    assert graph["app"] == {"app.free"}
    assert graph["app.kinds"] == {"app.kinds.alpha"}
    assert graph["app.kinds.alpha"] == {"app.kinds.beta"}
    assert graph["app.kinds.beta"] == {"app.kinds.gamma"}
    assert graph["app.kinds.gamma"] == {"app.kinds"}
    assert graph["app.free"] == {"app.kinds.alpha"}
    assert find_cycles(graph) == [
        ["app.kinds", "app.kinds.alpha", "app.kinds.beta", "app.kinds.gamma", "app.kinds"]
    ]


def test_the_detector_passes_a_graph_without_cycles_and_flags_layer_breaks() -> None:
    acyclic: Graph = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert find_cycles(acyclic) == []
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [
        ["a", "b", "a"],
        ["c", "d", "c"],
    ]

    layered: Graph = {
        "web.domain.queue": {"worker.jobs", "web.settings"},
        "web.settings": {"web.api.auth"},
        "web.api.auth": {"web.domain.queue"},
        "web.dashboard.keys": {"worker.engine"},
        "web.cli": {"worker.settings"},
    }
    assert list(_violations(layered)) == [
        "web.dashboard.keys imports worker.engine (web never imports worker)",
        "web.domain.queue imports worker.jobs",
        "web.settings imports web.api.auth",
    ]
