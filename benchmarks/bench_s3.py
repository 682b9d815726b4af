"""Benchmark: opening a store and building its cohort row from S3 (loopback moto) next to the same store on disk.

The example Visium sample (``hest_spatialdata.example``, a real H&E crop with its real spots, nuclei and counts) is
converted once locally, then published to a bucket of the tests' loopback S3 server (``tests/s3_server.py``: moto's
server mode behind a counting proxy, on 127.0.0.1; no network, so the times are the client's work). For each
operation this prints, remote and local side by side, in the same run:

- ``open``: ``hs.read_store(store)`` (remote: a metadata mirror + tables and shapes, lazy images and points);
- ``cohort row``: ``hs.open_cohort(folder)`` of that one store (root ``zarr.json``, the table's var-index
  ``zarr.json`` and the shapes' Parquet footers);
- ``window``: open + compute a 1024 x 1024 window of the H&E's level 0.

Remote: the requests and response bytes the proxy counted; local: bytes read from files (``/proc/self/io``
``rchar``). Times are the best of ``--repeat`` alternating rounds, with the ratio remote / local and the
1-minute load average before -> after each figure.

Usage::

    python benchmarks/bench_s3.py              # 3 rounds, a few seconds each
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.s3_server
WINDOW = 1024


def _read_chars() -> int:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar")))


def _operations(store: Any) -> dict[str, Callable[[], object]]:
    import hest_spatialdata as hs

    def window() -> object:
        sdata = hs.read_store(store, selection=("images",))
        return sdata["he"]["scale0"]["image"][:, :WINDOW, :WINDOW].values

    folder = store.parent
    return {"open": lambda: hs.read_store(store), "cohort row": lambda: hs.open_cohort(folder), "window": window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import spatialdata  # noqa: F401 - imported before timing: both sides need it
    from tests.s3_server import LoopbackS3

    from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, write_visium_sample
    from hest_spatialdata.storage._publish import publish_store
    from hest_spatialdata.storage.locations import locate
    from hest_spatialdata.storage.store import convert_sample

    print(_harness.machine_text())
    with tempfile.TemporaryDirectory() as scratch, LoopbackS3() as server:
        os.environ.update(server.env())
        root = Path(scratch) / "hest"
        write_visium_sample(root, EXAMPLE_SAMPLE_ID)
        local = convert_sample(root, EXAMPLE_SAMPLE_ID, Path(scratch) / "stores")
        bucket = server.new_bucket()
        remote = locate(f"s3://{bucket}/stores/{local.name}")
        publish_store(local, remote, sample_id=EXAMPLE_SAMPLE_ID, overwrite=False)
        size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
        print(f"store: {EXAMPLE_SAMPLE_ID}, {size / 1e6:.1f} MB in {sum(1 for _ in local.rglob('*'))} files")
        stores = {"remote": _operations(remote), "local": _operations(local)}
        _run(stores, server, args.repeat)


def _run(stores: dict[str, dict[str, Callable[[], object]]], server: Any, repeat: int) -> None:
    times: dict[tuple[str, str], list[float]] = {}
    moved: dict[tuple[str, str], str] = {}
    loads: dict[tuple[str, str], list[float]] = {}
    for _, side in _harness.rounds(list(stores), repeat):
        for name, operation in stores[side].items():
            server.reset_log()
            chars, before = _read_chars(), _harness.load1()
            with _harness.Stopwatch() as watch:
                operation()
            key = (name, side)
            times.setdefault(key, []).append(watch.wall)
            loads.setdefault(key, []).extend([before, _harness.load1()])
            if side == "remote":
                moved[key] = f"{server.requests()} requests, {server.sent() / 1e6:.2f} MB"
            else:
                moved[key] = f"{(_read_chars() - chars) / 1e6:.2f} MB read from files"
    rows = []
    for name in stores["remote"]:
        remote, local = _harness.Stats.of(times[(name, "remote")]), _harness.Stats.of(times[(name, "local")])
        rows.append([
            name, f"{remote.min:.3f}", f"{local.min:.3f}", f"{remote.min / local.min:.2f}x",
            moved[(name, "remote")], moved[(name, "local")],
            _harness.load_range_text(loads[(name, "remote")] + loads[(name, "local")]),
        ])  # fmt: skip
    _harness.print_table(
        ["operation", "remote s (best)", "local s (best)", "remote / local", "remote moved", "local moved", "load"],
        rows,
        note=f"best of {repeat} alternating rounds; remote = moto on loopback (no network latency)",
    )


if __name__ == "__main__":
    main()
