"""Stage-by-stage progress for long commands: a bar over the stages, each stage's time when it ends, and the steps
of a long stage as they happen (``note``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

_showing: StageProgress | None = None  # the innermost progress on screen: where ``note`` prints


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
        self._stage_start: float | None = None
        self._outer: StageProgress | None = None

    def __enter__(self) -> StageProgress:
        global _showing
        self._outer, _showing = _showing, self
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _showing
        self._progress.stop()
        _showing = self._outer

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self._progress.update(self._task, description=title)
        start = self._stage_start = time.perf_counter()
        try:
            yield
        finally:
            self._stage_start = None
        if not self.quiet:
            self.console.print(f"[green]✓[/green] {title:<32} {time.perf_counter() - start:7.1f} s")
        self._progress.advance(self._task)

    def note(self, text: str) -> None:
        """One step of the current stage done, printed under it with the time since the stage began: a stage of
        minutes (lowering, verification) shows how far it has got."""
        started = self._stage_start
        if self.quiet or started is None:
            return
        self.console.print(f"  [dim]·[/dim] {text:<30} {time.perf_counter() - started:7.1f} s", style="dim")


def note(text: str) -> None:
    """``StageProgress.note`` on the progress showing now, if any (a call outside a command's stages, such as
    `ingot verify`'s verification or a test's, prints nothing). Safe from worker threads: rich's console locks."""
    if _showing is not None:
        _showing.note(text)
