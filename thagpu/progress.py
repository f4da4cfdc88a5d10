"""Progress of long commands: a rich bar on a terminal, one plain line per step in a log.

A rich progress bar draws nothing useful when its output is a file or a pipe (a cluster job's log,
CI): it repaints one line in place, and a non-terminal console gets no repaints at all. So
:func:`make_progress` returns a rich :class:`~rich.progress.Progress` on a terminal and a
:class:`LineProgress` otherwise, which prints one line each time a task advances, with the task's
elapsed time and an estimate of the time left (linear in the steps done), and flushes it at once::

    [0:01:12] disagreement round 1: fold 0: 3/10 (30%), elapsed 0:00:09, eta 0:00:21

Both offer the part of the rich API the commands use: ``add_task``, ``update``, ``advance``,
``console`` and use as a context manager. :func:`stage_progress` wraps either in the
``progress(what, i, n)`` callback the library functions take.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["LineProgress", "make_progress", "stage_progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a number of seconds (rounded down to whole seconds).

    Examples
    --------
    >>> format_duration(3725.9)
    '1:02:05'
    """
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Task:
    __slots__ = ("description", "total", "completed", "started", "fields")

    def __init__(self, description, total, started, fields):
        self.description, self.total, self.completed, self.started, self.fields = (
            description, total, 0, started, dict(fields))


class LineProgress:
    """Progress as one printed line per step, for output that is not a terminal.

    Parameters
    ----------
    console : rich.console.Console
        Where the lines go (printed without markup or highlighting, flushed line by line).
    clock : callable, optional
        Seconds, monotonic (``time.monotonic``); tests pass a fake one.

    Notes
    -----
    A line is printed when a task's completed count changes. Its elapsed time runs from the task's
    creation; the ETA is ``elapsed / completed x (total - completed)``, shown once at least one step
    is done and the total is known. The bracketed prefix is the time since this progress began.
    """

    def __init__(self, console, *, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self._clock = clock
        self._start = clock()
        self._tasks: list = []

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        """Start a task; returns its id for :meth:`update` and :meth:`advance`."""
        self._tasks.append(_Task(description, total, self._clock(), fields))
        return len(self._tasks) - 1

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        """Change a task as :meth:`rich.progress.Progress.update` does; prints a line if it advanced."""
        task = self._tasks[task_id]
        before = task.completed
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        task.fields.update(fields)
        if task.completed != before:
            self._print(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add ``advance`` steps to a task and print its line."""
        self.update(task_id, advance=advance)

    def line(self, task_id: int) -> str:
        """The line describing a task now (without printing it)."""
        task = self._tasks[task_id]
        return self._format(task)

    def _format(self, task: _Task) -> str:
        now = self._clock()
        elapsed = now - task.started
        done = f"{task.completed:g}"
        if task.total:
            done += f"/{task.total:g} ({100.0 * task.completed / task.total:.0f}%)"
        text = f"[{format_duration(now - self._start)}] {task.description}: {done}, elapsed {format_duration(elapsed)}"
        if task.total and task.completed > 0:
            left = elapsed / task.completed * max(0.0, task.total - task.completed)
            text += f", eta {format_duration(left)}"
        extra = ", ".join(str(value) for value in task.fields.values() if value not in (None, ""))
        return text + (f", {extra}" if extra else "")

    def _print(self, task: _Task) -> None:
        self.console.print(self._format(task), markup=False, highlight=False, soft_wrap=True)
        file = getattr(self.console, "file", None)
        if file is not None and hasattr(file, "flush"):
            file.flush()


def make_progress(console, *extra_columns, lines: bool | None = None):
    """A progress display on ``console``: a rich bar on a terminal, a :class:`LineProgress` otherwise.

    Parameters
    ----------
    console : rich.console.Console
    *extra_columns : rich.progress.ProgressColumn
        Drawn after the count in the rich bar (a :class:`LineProgress` prints the task's fields).
    lines : bool, optional
        Force line output (True) or the rich bar (False); default: lines unless ``console`` is a terminal.
    """
    if lines is None:
        lines = not console.is_terminal
    if lines:
        return LineProgress(console)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=False)


def stage_progress(console, lines: bool | None = None) -> tuple:
    """(progress, report): ``report(what, i, n)`` draws one task per distinct ``what`` on ``progress``."""
    progress = make_progress(console, lines=lines)
    tasks: dict = {}

    def report(what: str, i: int, n: int) -> None:
        if what not in tasks:
            tasks[what] = progress.add_task(what, total=n)
        progress.update(tasks[what], completed=i, total=n)

    return progress, report
