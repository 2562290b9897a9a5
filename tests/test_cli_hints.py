"""Every command a message suggests exists: the suggestions (``alexnet <command> ...`` and
``--flag`` in the project's strings) are collected from the source and parsed with the CLI's
own parser, so a hint can never name a command or a flag that is not there."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import alexnet
from alexnet.cli import build_parser

PACKAGE = Path(alexnet.__file__).parent
HOLE = "\x00"  # where an f-string inserts a value
# Flags that messages name for other programs (torchrun's, pip's, python's), not alexnet's.
FOREIGN_FLAGS = {"--nproc_per_node", "--nproc-per-node", "--nnodes", "--node_rank", "--master_addr", "--master_port",
                 "--standalone", "--rdzv-backend", "--rdzv-endpoint", "--rdzv_backend", "--rdzv_endpoint",
                 "--index-url", "--extra-index-url", "--upgrade", "--break-system-packages", "--no-deps", "--user"}  # fmt: skip
# Where a suggested command ends in a message (backticks, brackets, separators, prose).
_END = re.compile(r"`|\)|\(|;|\||,|\n|\.\.\.|: | and | or | to | then | instead| again| first| with the| for | as ")


@dataclass(frozen=True)
class Hint:
    where: str
    command: str  # the text after "alexnet ", placeholders marked with HOLE


def _text(node: ast.AST) -> str | None:
    """A string constant, or an f-string with each inserted value as :data:`HOLE`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                parts.append(v.value)
            else:
                parts.append(HOLE)
        return "".join(parts)
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes: documentation, not messages."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings() -> list[tuple[str, str]]:
    """(file:line, text) of every string literal and f-string in the package, docstrings left out.
    Implicitly concatenated pieces are one node, so a message split over lines is whole."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if id(node) in skip or id(node) in inner:
                continue
            text = _text(node)
            if text:
                out.append((f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}", text))
    return out


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def hints() -> list[Hint]:
    names = "|".join(sorted(map(re.escape, _commands()), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])alexnet ({names})(?![\w:'-])")  # not "alexnet serve's", "alexnet train:"
    found = []
    for where, text in _strings():
        for m in pattern.finditer(text):
            rest = text[m.start(1) :]
            end = _END.search(rest)
            command = _without_prose((rest[: end.start()] if end else rest).strip().rstrip("."))
            found.append(Hint(where, command))
    return found


def _without_prose(command: str) -> str:
    """The command up to the first plain word that is neither a subcommand nor a flag's value:
    "alexnet report draws with matplotlib" names the command ``report``, it does not run it."""
    tokens = command.split()
    parser, used = _subparser(tokens)
    kept, previous = tokens[:used], None
    for token in tokens[used:]:
        if re.fullmatch(r"[a-z]+", token) and not (previous and previous in parser._option_string_actions):
            break
        kept.append(token)
        previous = token if token.startswith("-") else None
    return " ".join(kept)


def _subparser(tokens: list[str]) -> tuple[argparse.ArgumentParser, int]:
    """The (sub)parser the tokens end in, and how many tokens name it."""
    parser, used = build_parser(), 0
    while used < len(tokens):
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or tokens[used] not in sub.choices:
            break
        parser, used = sub.choices[tokens[used]], used + 1
    return parser, used


def _placeholder(token: str) -> bool:
    """FOLDER, RUN, OUT, FILE.png, {value}: what the user fills in."""
    return HOLE in token or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[a-z]+)?", token))


def _dummy(action: argparse.Action | None) -> str:
    """A value ``action`` accepts, in place of a placeholder."""
    if action is None:
        return "x"
    candidates = [str(c) for c in action.choices] if action.choices else ["1", "0.5", "x", "1,1,1,1,1"]
    for value in candidates:
        try:
            converted = action.type(value) if callable(action.type) else value
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        if not action.choices or converted in action.choices:
            return value
    return candidates[0]


def check(hint: Hint) -> str | None:
    """What is wrong with the suggested command (None: it parses)."""
    tokens = hint.command.split()
    parser, used = _subparser(tokens)
    if used == 0:
        return f"no command {tokens[0]!r}"
    args, previous = [], None
    for token in tokens[used:]:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag not in parser._option_string_actions:
            return f"{parser.prog} has no option {flag}"
        if _placeholder(token):
            token = _dummy(parser._option_string_actions.get(previous) if previous else None)
        args.append(token)
        previous = flag if flag.startswith("-") else None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as e:
        message = err.getvalue().strip()
        # A hint may name a command and its flags without a whole invocation ("`alexnet prepare
        # --size 256`"); what it names must exist and what it gives must be accepted.
        if e.code and "the following arguments are required" not in message:
            return message
    return None


def test_hints_are_found() -> None:
    """The collector sees the messages it must check (a regression here would make the check vacuous)."""
    commands = {h.command for h in hints()}
    assert "prepare SOURCE OUT --channels \x00" in commands  # the warm start's channel hint
    assert any(c.startswith("train --resume") for c in commands)
    assert len(commands) > 15


@pytest.mark.parametrize("hint", hints(), ids=lambda h: f"{h.where}:{h.command.replace(HOLE, '{}')}")
def test_suggested_command_parses(hint: Hint) -> None:
    problem = check(hint)
    assert problem is None, f"{hint.where}: `alexnet {hint.command.replace(HOLE, '{...}')}`: {problem}"


def test_every_suggested_flag_exists() -> None:
    """A ``--flag`` named in any message is an option of some alexnet command (or a foreign
    program's, listed in :data:`FOREIGN_FLAGS`)."""
    known = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        known |= set(parser._option_string_actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    unknown = []
    for where, text in _strings():
        if not re.search(r"\s", text):  # one token: an argv element or an option's definition, not a message
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text):
            if flag not in known and flag not in FOREIGN_FLAGS:
                unknown.append(f"{where}: {flag}")
    assert not unknown, unknown


def test_the_checker_catches_bad_hints() -> None:
    assert check(Hint("t", "prepare SOURCE OUT --colour 1")) == "alexnet prepare has no option --colour"
    assert check(Hint("t", "prepare SOURCE OUT --channels 2")) is not None  # not a choice
    assert check(Hint("t", "fine-tune RUN")) == "no command 'fine-tune'"
    assert check(Hint("t", "train --data \x00 --epochs N")) is None
    assert check(Hint("t", "data show \x00")) is None
    assert check(Hint("t", "prepare")) is None  # "run `alexnet prepare` again": names the command only
    assert check(Hint("t", "prepare --size 256")) is None  # a command and a flag, not a whole invocation
    assert "invalid choice" in check(Hint("t", "prepare --size 256 --encoding png"))
