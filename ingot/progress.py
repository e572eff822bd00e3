"""Stage-by-stage progress for long commands: a bar over the stages, and each stage's time when it ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class StageProgress:
    def __init__(self, total: int, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=quiet,
        )
        self._task = self._progress.add_task("", total=total)

    def __enter__(self) -> StageProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self._progress.update(self._task, description=title)
        start = time.perf_counter()
        yield
        if not self.quiet:
            self.console.print(f"[green]✓[/green] {title:<32} {time.perf_counter() - start:7.1f} s")
        self._progress.advance(self._task)
