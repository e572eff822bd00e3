"""What every command's parser shares: one-line usage errors, the `--cache-dir` parent, and argument types."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

Handler = Callable[[argparse.Namespace], int | None]  # an exit code, or None for 0


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, like every other error of `ingot`."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see: {self.prog} --help)\n")
        sys.exit(2)


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


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value
