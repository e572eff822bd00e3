"""What every command's parser shares: the `--cache-dir` parent, adding a command, and argument types."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], None]


def cache_dir_parent() -> argparse.ArgumentParser:
    """`--cache-dir`, which every command that reads or writes artifacts takes."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--cache-dir", help="artifact cache (default $INGOT_CACHE_DIR or the user cache dir)")
    return parent


def add_command(
    commands: argparse._SubParsersAction, name: str, handler: Handler, help: str,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:  # fmt: skip
    sub = commands.add_parser(name, help=help, description=help, parents=parents)
    sub.set_defaults(handler=handler)
    return sub


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
