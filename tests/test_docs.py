"""The documentation points at things that exist: every relative link in README.md and docs/
reaches a file (and its #anchor a heading), every repository path in inline code exists, and
every ``alexnet ...`` command shown there names a real subcommand and only flags that
subcommand's parser knows.

Commands are checked against the argparse parser built in-process, not run.
"""

from __future__ import annotations

import argparse
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from alexnet.cli import build_parser
from tests.helpers.cli import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!`)!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
REPO_PATH = re.compile(r"^((?:alexnet|tests|scripts|docs|examples)/[\w/.\-]*[\w/])")  # `alexnet/io.py`, `docs/x.md`
WRAPPERS = {"sudo", "nice", "time", "/usr/bin/time", "-v", "exec"}


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text())
    return frozenset(_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, re.MULTILINE))


def _links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_relative_link_reaches_a_file_and_its_anchor(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, broken


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_repository_path_shown_exists(doc: Path) -> None:
    spans = INLINE.findall(FENCE.sub("", doc.read_text()))
    paths = {m.group(1) for span in spans for w in span.split() if (m := REPO_PATH.match(w))}
    assert not [p for p in sorted(paths) if not (REPO / p).exists()]


def _commands(text: str) -> list[str]:
    """The ``alexnet ...`` command lines in a page: in code blocks and in inline code."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            found += _in_line(line.split(" #", 1)[0] if not line.startswith("#") else "")
    for span in INLINE.findall(FENCE.sub("", text)):
        found += _in_line(span)
    return found


def _in_line(line: str) -> list[str]:
    """Each ``alexnet`` invocation in one shell line (``|``, ``;`` and ``&&`` separate them)."""
    out = []
    for part in re.split(r"\s\|\s|;|&&|\$\(", line):
        words = part.split()
        while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] in WRAPPERS):
            words = words[1:]  # VAR=value, nice, /usr/bin/time -v
        if words[:1] in (["alexnet"], [".venv/bin/alexnet"]):
            out.append(" ".join(words[1:]))
        elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["alexnet"]:
            out.append(" ".join(words[words.index("-m") + 2 :]))  # python -m alexnet, torchrun ... -m alexnet
    return [c for c in out if c]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _problems(command: str, parser: argparse.ArgumentParser) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    words = [w.strip("[]()|,") for w in words if w not in ("...", "…")]  # "..." stands for more flags
    if not words:
        return []
    path = []
    while (choices := _subparsers(parser)) and words:
        if words[0] not in choices:
            return [f"alexnet {' '.join(path)} {words[0]}: no such command".replace("  ", " ")]
        path.append(words.pop(0))
        parser = choices[path[-1]]
    known = {s for a in parser._actions for s in a.option_strings}
    flags = [f for w in words if w.startswith("-") and w != "-" and not re.match(r"-\d", w) for f in w.split("/")]
    return [f"alexnet {' '.join(path)}: unknown flag {f}" for f in flags if f.split("=")[0] not in known]  # --a/--b: both


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_command_shown_exists_with_its_flags(doc: Path, parser: argparse.ArgumentParser) -> None:
    commands = _commands(doc.read_text())
    problems = [f"`alexnet {c}`: {p}" for c in commands for p in _problems(c, parser)]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_commands_and_rejects_unknown_ones(parser: argparse.ArgumentParser) -> None:
    text = "```\nalexnet train --data x --epochs 3  # a comment --not-a-flag\n```\nand `alexnet eval RUN --nope`"
    assert _commands(text) == ["train --data x --epochs 3", "eval RUN --nope"]
    assert _problems("train --data x --epochs 3", parser) == []
    assert _problems("eval RUN --nope", parser) == ["alexnet eval: unknown flag --nope"]
    assert _problems("bench train --nproc 2", parser) == []
    assert _problems("frobnicate", parser) == ["alexnet frobnicate: no such command"]
    assert _problems("train --lrn-order/--lrn-scope", parser) == [] and _problems("...", parser) == []
    assert _slug("Serving (`alexnet serve`)") == "serving-alexnet-serve"
    assert REPO_PATH.match("alexnet/models/lrn.py,").group(1) == "alexnet/models/lrn.py"  # type: ignore[union-attr]
    assert REPO_PATH.match("alexnet-small") is None


def test_code_says_why_without_issue_numbers_or_missing_notes() -> None:
    """History belongs in docs/: no source file names an issue number or a notes/ file."""
    history = re.compile(r"\bissue[ #-]?\d+|\bissue's\b|\bnotes/README", re.IGNORECASE)
    files = [p for d in ("alexnet", "scripts", "tests") for p in sorted((REPO / d).rglob("*")) if p.suffix in (".py", "")]
    found = [f"{_id(p)}:{n}: {line.strip()}" for p in files if p.is_file() and p.name != Path(__file__).name
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if history.search(line)]  # fmt: skip
    assert not found, "\n".join(found)
