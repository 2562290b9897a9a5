"""The ``alexnet`` command line's entry point: the parser of every subcommand, and the one-line errors.

User errors (:class:`~alexnet.errors.UserError`, bad flags) print one line and exit 2; no
traceback. To add a command, write a module with ``add_parser(subparsers)`` that sets
``func=run`` on its parser and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from alexnet.errors import Interrupted, UserError

EXIT_USAGE = 2

# Subcommand modules, in the order `alexnet --help` lists them.
COMMANDS = (
    "alexnet.cli.models_cmd",
    "alexnet.cli.train_cmd",
    "alexnet.cli.eval_cmd",
    "alexnet.cli.predict_cmd",
    "alexnet.cli.baseline_cmd",
    "alexnet.cli.import_cmd",
    "alexnet.cli.export_cmd",
    "alexnet.cli.serve_cmd",
    "alexnet.cli.demo_cmd",
    "alexnet.cli.report_cmd",
    "alexnet.cli.probe_cmd",
    "alexnet.cli.explain_cmd",
    "alexnet.cli.features_cmd",
    "alexnet.cli.similar_cmd",
    "alexnet.cli.prepare_cmd",
    "alexnet.cli.data_cmd",
    "alexnet.cli.bench_cmd",
    "alexnet.cli.experiment_cmd",
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    """The full parser with every subcommand registered."""
    from alexnet import __version__

    parser = ArgumentParser(prog="alexnet", description="AlexNet (Krizhevsky et al. 2012) on PyTorch.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alexnet`` console script and ``python -m alexnet``."""
    code = _dispatch(argv)
    # A process started by torchrun that joined a process group exits right here (see
    # distributed.exit_code); the module is only loaded once a command has needed it.
    distributed = sys.modules.get("alexnet.training.distributed")
    return distributed.exit_code(code) if distributed is not None else code


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"alexnet: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as e:  # a run inside a larger command (an experiment): it saved its state
        print(f"alexnet: {e}; run the same command again to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `alexnet ... | head`
        return 0
    except OSError as e:  # disk full, read-only folder, ...: one line naming the path and the cause
        print(f"alexnet: error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE


# What the user can do about the usual failed writes.
_OS_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
}


def describe_os_error(e: OSError) -> str:
    """One line for an :class:`OSError`: the path, the cause, and what to do."""
    where = f"{e.filename}: " if e.filename else ""
    hint = _OS_HINTS.get(e.errno or 0)
    return f"{where}{e.strerror or e}" + (f" ({hint})" if hint else "")
