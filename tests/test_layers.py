"""The dependency direction of the package, checked on its source: every ``alexnet.X`` import
(including the late ones inside functions) goes to a lower layer than the importing module's."""

from __future__ import annotations

import ast
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
