"""Progress bars: rich bars fed by dask's scheduler callbacks, so long writes show how far they are."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from dask.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second of a task (rich's own speed column is for bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        """``"1,234 patches/s"``, blank until rich has a speed."""
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed is not None else "", style="progress.data.speed")


def new_progress(*, disable: bool = False, rate_unit: str | None = None) -> Progress:
    """A rich progress display on stderr (stdout stays clean for results), with the CLI's columns.

    With ``rate_unit`` (e.g. ``"patches"``), the rate and the time remaining are shown too.
    """
    rate = [RateColumn(rate_unit), TimeRemainingColumn()] if rate_unit else []
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *rate,
        TimeElapsedColumn(),
        console=Console(stderr=True, soft_wrap=True),
        disable=disable,
        transient=False,
    )


class DaskTaskProgress(Callback):
    """Advance a rich task by one for every dask task finished (threaded and synchronous schedulers).

    Parameters
    ----------
    progress
        The rich progress display.
    description
        Label of the bar.
    """

    def __init__(self, progress: Progress, description: str) -> None:
        super().__init__()
        self._progress = progress
        self._description = description
        self._task: TaskID | None = None
        self._token: Token[DaskTaskProgress | None] | None = None

    def __enter__(self) -> DaskTaskProgress:
        self._token = current_bar.set(self)
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        if self._token is not None:
            current_bar.reset(self._token)

    def add_tasks(self, total: int) -> None:
        """Count ``total`` more tasks (a compute, or the slide's blocks written outside dask)."""
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=total)
        else:  # a second compute in the same write (e.g. points after images): extend the bar
            self._progress.update(self._task, total=(self._progress.tasks[self._task].total or 0) + total)

    def advance(self) -> None:
        """One task done (thread-safe: rich locks its progress)."""
        if self._task is not None:
            self._progress.advance(self._task)

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        self.add_tasks(sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.advance()

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self._task is not None and not errored:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, completed=task.total)


#: The bar of the write in progress in this context (set by :class:`DaskTaskProgress`), for the slide's writer,
#: which writes outside dask (:mod:`hest_spatialdata.writer.image`).
current_bar: ContextVar[DaskTaskProgress | None] = ContextVar("hest_spatialdata_write_bar", default=None)
