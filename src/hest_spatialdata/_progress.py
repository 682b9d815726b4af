"""Progress bars: rich bars fed by dask's scheduler callbacks, so long writes show how far they are."""

from __future__ import annotations

from typing import Any

from dask.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def new_progress(*, disable: bool = False) -> Progress:
    """A rich progress display on stderr (stdout stays clean for results), with the CLI's columns."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
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

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=total)
        else:  # a second compute in the same write (e.g. points after images): extend the bar
            self._progress.update(self._task, total=(self._progress.tasks[self._task].total or 0) + total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self._task is not None and not errored:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, completed=task.total)
