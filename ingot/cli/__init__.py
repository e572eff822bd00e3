"""The `ingot` command. Errors end here: one line on stderr and a non-zero exit, never a traceback.

Each command group is a module with ``add_parsers(commands, cache_dir)`` and its ``cmd_*`` functions, which import
the heavy layers (compile, runtime, torch) only when they run, so `ingot --help` and `ingot cache-key` stay fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ingot import __version__
from ingot.cli import artifacts, bench, compile, detect, registry, serve
from ingot.cli.arguments import Parser, cache_dir_parent
from ingot.cli.locate import check_cache_dir
from ingot.cli.printing import err
from ingot.errors import IngotError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ingot", description="Compile models ahead of time and serve them.")
    parser.add_argument("--version", action="version", version=f"ingot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    cache_dir = cache_dir_parent()
    for group in (compile, artifacts, registry, serve, detect, bench):
        group.add_parsers(commands, cache_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_cache_dir(args.cache_dir)  # every command takes --cache-dir
        status = args.handler(args)  # None, or an exit code of its own (`ingot pull --check`)
    except IngotError as error:
        err.print(f"error: {error}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return status or 0
