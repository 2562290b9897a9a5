"""The dependency direction of the package, checked on its source: every ``alexnet.X`` import
(including the late ones inside functions) goes to a lower layer than the importing module's,
and between the modules themselves (sub-modules and package ``__init__`` files included) the
imports form no cycle, late ones included: a late import may only go where a top-level one could."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import alexnet

# Lower layers first. Models and data at the bottom; the checkpoint format above them (it names
# a model and its data); then what evaluates, trains, fits or converts models; the predictor
# that opens any of those models; then what runs them; the servers, benchmarks and the command line on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("io", "runtime"),
    ("data", "models", "runfolder"),
    ("checkpoint", "precision"),
    ("evaluation",),
    ("training", "baselines", "interop"),
    ("inference",),
    ("reporting", "experiments"),
    ("serving",),
    ("bench",),
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """The top-level ``alexnet`` sub-packages/modules that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "alexnet" else [f"alexnet.{a.name}" for a in node.names]
            names = [n for n in names if not n.startswith("alexnet.__")]  # the package's own __version__
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("alexnet.")}
    return found


def test_every_import_goes_down() -> None:
    root = Path(alexnet.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in RANK, f"{rel}: {own!r} is in no layer of LAYERS; place it"
        for target in _imports(path) - {own}:
            assert target in RANK, f"{rel} imports alexnet.{target}, which is in no layer of LAYERS"
            if RANK[target] >= RANK[own]:
                upward.append(f"{rel} -> alexnet.{target}")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def _module_name(root: Path, path: Path) -> str:
    parts = ["alexnet", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_edges(root: Path) -> dict[str, dict[str, str]]:
    """Module -> {imported alexnet module: "top-level" or "late"} over the package's source.

    ``from P import N`` goes to the module ``P.N`` where that is a module, else to ``P`` (whose
    ``__init__`` defines N); imports under ``if TYPE_CHECKING:`` are never executed and left out.
    """
    modules = {_module_name(root, p) for p in root.rglob("*.py")}
    edges: dict[str, dict[str, str]] = {}
    for path in sorted(root.rglob("*.py")):
        here = _module_name(root, path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
        found: dict[str, str] = {}
        for target, late in _imported(ast.parse(path.read_text(encoding="utf-8")), package, modules, False):
            if target != here and found.get(target) != "top-level":
                found[target] = "late" if late else "top-level"
        edges[here] = found
    return edges


def _imported(node: ast.AST, package: str, modules: set[str], late: bool) -> Iterator[tuple[str, bool]]:
    """(module, whether inside a function) of every import of the package's ``modules`` under ``node``."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return
    if isinstance(node, ast.Import):
        yield from ((a.name, late) for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from this module's package (or one above it)
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for a in node.names:
            target = f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
            if target in modules:
                yield target, late
    inner = late or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for child in ast.iter_child_nodes(node):
        yield from _imported(child, package, modules, inner)


def _cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_between_modules() -> None:
    """No module imports itself through others, at the top level or late (inside a function)."""
    edges = _import_edges(Path(alexnet.__file__).parent)
    assert len(edges) > 100 and "alexnet.models.registry" in edges["alexnet.models"]  # the graph is the package's
    described = []
    for component in _cycles(edges):
        inside = [f"{a} -> {b} ({kind})" for a in component for b, kind in edges[a].items() if b in component]
        described.append("cycle:\n  " + "\n  ".join(inside))
    assert not described, "\n".join(described)


def test_the_cycle_finder_finds_a_cycle_through_a_late_import() -> None:
    edges = {"a": {"b": "top-level"}, "b": {"c": "top-level"}, "c": {"a": "late"}, "d": {"a": "top-level"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": "late"}, "b": {}}) == []


def test_tests_share_helpers_through_tests_helpers_not_each_other() -> None:
    """A test module imports shared code from ``tests.helpers``, never from conftest or another test module."""
    tests = Path(__file__).parent
    bad = []
    for path in sorted(tests.rglob("*.py")):
        for name in _imports_anywhere(path):
            leaf = name.split(".")[-1] if name.startswith("tests.") else name
            if name.startswith("tests.") and not name.startswith("tests.helpers") or leaf == "conftest" \
                    or (leaf.startswith("test_") and (tests / f"{leaf}.py").exists()):  # fmt: skip
                bad.append(f"{path.relative_to(tests)} imports {name}")
    assert not bad, bad


def _imports_anywhere(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            if node.module == "tests":
                names |= {f"tests.{a.name}" for a in node.names}
    return names
