"""The error types users see: bad input (naming the sample and the file), and an output store already there."""

from __future__ import annotations

from pathlib import Path


class HestInputError(ValueError):
    """A HEST source file is missing, unreadable or inconsistent.

    Parameters
    ----------
    sample_id
        The HEST sample id (e.g. ``TENX95``).
    path
        The offending file (or folder).
    problem
        What is wrong, in words a user can act on.
    """

    def __init__(self, sample_id: str | None, path: str | Path | None, problem: str) -> None:
        self.sample_id = sample_id
        remote = path is not None and "://" in str(path)  # a remote file keeps its URL (Path would mangle it)
        self.path = None if path is None else str(path) if remote else Path(path)
        self.problem = problem
        where = f" ({self.path})" if self.path is not None else ""
        who = f"sample {sample_id}" if sample_id else "HEST input"
        super().__init__(f"{who}{where}: {problem}")


class StoreExistsError(FileExistsError):
    """The output store exists and ``overwrite`` was not given."""
