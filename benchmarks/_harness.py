"""The measuring harness shared by ``benchmarks/bench_*.py``: timing, memory, fresh subprocesses, load, tables.

Every benchmark follows the same pattern: a small *driver* process builds (or finds cached) inputs, then runs each
measurement in a **fresh subprocess** (:func:`run_child` / :func:`run_script`) so that imports, caches and peak memory
do not leak from one measurement into the next, and repeats them in alternating order (:func:`rounds`) so that load
from other users of these shared 2-core machines hits every variant alike. Each figure is printed with the machine's
1-minute load average before and after it (:func:`load1`, :func:`load_text`): a wall time means little without it.

- Timing: :class:`Stopwatch` (wall and CPU seconds of a block), :class:`Stats` (min / median over repeats).
- Memory: :attr:`ChildRun.peak_rss` is the peak resident memory of the child process (``ru_maxrss`` from ``wait4``,
  including any processes the child waited for); :func:`peak_rss` and :func:`current_rss` are this process's own,
  for figures taken inside a child (e.g. "RSS after imports"); :class:`RssSampler` samples RSS in a thread.
  On Linux a process started the usual way (``subprocess`` uses ``vfork`` + ``exec``) inherits its parent's *peak*
  ``ru_maxrss``: a driver that once held 500 MiB makes every child report at least 500 MiB. :func:`run_child`
  therefore starts the command from a small launcher process that forks it afresh and reports the command's own
  peak, so the figure does not depend on the driver. A child's own :func:`peak_rss` (taken inside it) is clean too.
- Output: :func:`emit` prints a child's result as the last JSON line of its stdout, :attr:`ChildRun.result` reads it
  back; :func:`print_table` prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------- machine load


def load1() -> float:
    """The machine's 1-minute load average (``os.getloadavg``)."""
    return os.getloadavg()[0]


def load_text(before: float, after: float) -> str:
    """A load average before and after a measurement, e.g. ``"1.52->1.71"``."""
    return f"{before:.2f}->{after:.2f}"


def load_range_text(loads: Iterable[float]) -> str:
    """The range of several load averages, e.g. ``"1.5-2.1"`` (for a table cell covering repeats)."""
    values = list(loads)
    return f"{min(values):.1f}-{max(values):.1f}"


def machine_text() -> str:
    """Cores and the 1/5/15-minute load averages, for the head of a report."""
    one, five, fifteen = os.getloadavg()
    return f"cores: {os.cpu_count()}, load average (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------------------------- memory


def peak_rss() -> int:
    """Peak resident memory of this process so far, in bytes (``ru_maxrss``; imports included)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def current_rss() -> int:
    """Resident memory of this process now, in bytes."""
    import psutil  # a dependency of distributed, hence always installed with the package

    return psutil.Process().memory_info().rss


class PeakSampler:
    """Sample ``measure()`` every ``interval`` s in a thread; :attr:`peak` is the largest value seen.

    Parameters
    ----------
    measure
        What to sample (e.g. resident memory, bytes on disk).
    interval
        Seconds between samples.
    """

    def __init__(self, measure: Callable[[], int], interval: float = 0.05) -> None:
        self.measure, self.interval = measure, interval
        self.peak = measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())


class RssSampler(PeakSampler):
    """This process's peak resident memory within a block, sampled in a thread.

    Complements :func:`peak_rss`, which cannot be reset: the sampler sees the peak of one block only.
    """

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(current_rss, interval)


# --------------------------------------------------------------------------------------------- timing


class Stopwatch:
    """Wall and CPU seconds of a block: ``with Stopwatch() as sw: ...`` then ``sw.wall``, ``sw.cpu``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._wall0 = self._cpu0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


@dataclass(frozen=True)
class Stats:
    """Repeated measurements of one figure, summarised by their minimum and median."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        """The statistics of ``values`` (at least one)."""
        values = tuple(values)
        if not values:
            raise ValueError("no measurements")
        return cls(values)

    @property
    def min(self) -> float:
        """The best (smallest) value: the least disturbed by other load."""
        return min(self.values)

    @property
    def median(self) -> float:
        """The median value."""
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        """The largest value."""
        return max(self.values)

    def text(self, fmt: str = "{:.1f}", *, runs: bool = False) -> str:
        """``"min / median"``, with every value in brackets if ``runs``."""
        text = f"{fmt.format(self.min)} / {fmt.format(self.median)}"
        return text + (f" ({', '.join(fmt.format(v) for v in self.values)})" if runs else "")


def rounds(variants: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """``(round, variant)`` for ``repeat`` rounds, the order reversed every other round so load hits all alike."""
    for r in range(repeat):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            yield r, variant


# --------------------------------------------------------------------------------------------- fresh subprocesses

#: Started with ``python -c``: forks the command (a fork gets a fresh ``ru_maxrss`` accounting, starting at this small
#: process's size), waits for it, writes its peak RSS (``ru_maxrss`` of ``wait4``) to the inherited pipe ``argv[1]``
#: and exits as the command did.
_LAUNCHER = """
import os, signal, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        print(f"cannot run {sys.argv[2]}: {e}", file=sys.stderr, flush=True)
    os._exit(127)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command decides; its status is passed on below
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


@dataclass
class ChildRun:
    """One finished child process and what was measured around it."""

    command: list[str]
    returncode: int
    wall: float
    #: Peak resident memory of the command in bytes (``ru_maxrss`` from ``wait4``, its own waited-for children
    #: included, the driver's excluded); ``None`` if it was not reported.
    peak_rss: int | None
    load_before: float
    load_after: float
    stdout: str = ""
    stderr: str = field(default="", repr=False)

    @property
    def result(self) -> dict[str, Any]:
        """The last line of the child's stdout, parsed as JSON (what :func:`emit` printed)."""
        lines = self.stdout.strip().splitlines()
        if not lines:
            raise SystemExit(f"no result from {' '.join(self.command)}:\n{self.stderr}")
        return json.loads(lines[-1])

    @property
    def load(self) -> float:
        """Mean of the load averages before and after."""
        return (self.load_before + self.load_after) / 2

    @property
    def load_text(self) -> str:
        """``"before->after"``."""
        return load_text(self.load_before, self.load_after)


def run_child(
    command: Sequence[str | Path],
    *,
    capture: bool = True,
    quiet: bool = False,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run ``command`` in a fresh process and measure its wall time, peak RSS and the load around it.

    Parameters
    ----------
    command
        The command line.
    capture
        Capture stdout and stderr (for :attr:`ChildRun.result`); otherwise the child writes to this terminal.
    quiet
        Without ``capture``: discard the child's stdout (stderr still shows).
    check
        Exit with the child's output if it fails.
    env
        The child's environment (default: this one).
    """
    command = [str(c) for c in command]
    pipe = subprocess.PIPE if capture else None
    stdout = pipe if capture else (subprocess.DEVNULL if quiet else None)
    report_read, report_write = os.pipe()
    launcher = [sys.executable, "-c", _LAUNCHER, str(report_write), *command]
    load_before = load1()
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(launcher, stdout=stdout, stderr=pipe, text=True, env=env, pass_fds=(report_write,))
    finally:
        os.close(report_write)
    try:
        out, err = proc.communicate()
    except BaseException:  # e.g. KeyboardInterrupt (the command got the terminal's SIGINT too): stop the launcher
        proc.kill()
        proc.wait()
        raise
    finally:
        wall = time.perf_counter() - start
        with os.fdopen(report_read, "rb") as report:
            reported = report.read()
    maxrss = int(reported) * (1 if sys.platform == "darwin" else 1024) if reported.strip() else None
    run = ChildRun(command, proc.returncode, wall, maxrss, load_before, load1(), out or "", err or "")
    if check and run.returncode:
        raise SystemExit(f"failed ({run.returncode}): {' '.join(command)}\n{run.stdout}\n{run.stderr}")
    return run


def run_script(script: str | Path, *args: Any, **kwargs: Any) -> ChildRun:
    """:func:`run_child` on ``python script args...`` with this interpreter."""
    return run_child([sys.executable, str(script), *(str(a) for a in args)], **kwargs)


def emit(result: dict[str, Any]) -> None:
    """Print a child's result as one JSON line on stdout (the last line is what :attr:`ChildRun.result` reads)."""
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------- reports


def gib(n_bytes: float) -> float:
    """Bytes in GiB."""
    return n_bytes / 2**30


def mib(n_bytes: float) -> float:
    """Bytes in MiB."""
    return n_bytes / 2**20


def print_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, note: str | None = None) -> None:
    """Print a Markdown table (after a blank line), then ``note`` if given."""
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()
