"""The ``alexnet`` command line: one module per subcommand, each with ``add_parser`` and ``run``,
listed in :data:`alexnet.cli.main.COMMANDS`; :func:`main` is the console script."""

from alexnet.cli.main import COMMANDS, EXIT_USAGE, ArgumentParser, build_parser, describe_os_error, main

__all__ = ["COMMANDS", "EXIT_USAGE", "ArgumentParser", "build_parser", "describe_os_error", "main"]
