"""Benchmark: importing a raw Xenium bundle (``hs.import_10x``) against holding its transcripts in pandas.

Inputs (``hest_spatialdata.example.xenium_bundle``, cached in ``benchmarks/_work/xenium_import/``, git-ignored):
bundles of the real mouse-brain run with a post-Xenium H&E at 0.5 µm/px and a rotated, scaled, shifted alignment:

- ``small``: the tests' 350 µm crop (~120k transcripts);
- ``1M``: a 1300 x 800 µm crop (~1M transcripts, 5 row groups);
- ``whole``: the whole run (36,602 cells, ~12M transcripts, 47 row groups; an H&E of about 13k x 11k px), where
  spatialdata-io's frame has several partitions (``--sizes small 1M whole``: ~3 min to build, once).

Each measurement runs in a fresh subprocess (``_harness.py``) and reports wall seconds, transcripts per second and
the peak RSS (``ru_maxrss``, imports included, and the RSS after the imports):

- ``import``: the whole import (``he`` pyramid, ``transcripts``, boundaries, cell table, pseudo-spots, tissue,
  patches) into a fresh store;
- ``pandas``: what HEST's ``XeniumReader`` does by default (``use_dask=False``): the whole ``transcripts.parquet``
  read into one pandas frame and ``he_x``/``he_y`` added; the import streams instead, so its peak RSS should not grow
  with the transcripts. The ratio of the two peaks and how each grows from one size to the next (same run, same
  machine) are printed; the import's peak also holds the H&E's writing, which grows with the crop too.

Usage::

    python benchmarks/bench_import_xenium.py                # small and 1M
    python benchmarks/bench_import_xenium.py --sizes small 1M whole
    python benchmarks/bench_import_xenium.py --sizes small  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "xenium_import"
#: Bump when the bundle generator changes, so cached inputs are rebuilt.
INPUT_VERSION = 1
SIZES = {"small": None, "1M": (2600.0, 1700.0, 3900.0, 2500.0), "whole": (0.0, 0.0, 5600.0, 3700.0)}
MODES = ("import", "pandas")


def bundle_dir(size: str) -> Path:
    return WORK / f"v{INPUT_VERSION}" / size


def ensure_inputs(sizes: list[str]) -> None:
    """Write each bundle once (in a subprocess, so that its memory does not count)."""
    for size in sizes:
        if not (bundle_dir(size) / "complete").exists():
            shutil.rmtree(bundle_dir(size), ignore_errors=True)
            _harness.run_script(__file__, "--generate", size, capture=False)


def generate(size: str) -> None:
    from hest_spatialdata.example.xenium_bundle import write_xenium_bundle

    crop = SIZES[size]
    write_xenium_bundle(bundle_dir(size), **({"crop_um": crop} if crop else {}), row_group_size=1 << 18)
    (bundle_dir(size) / "complete").write_text("ok")


def measure(size: str, mode: str) -> dict[str, Any]:
    """One measurement in this process (a fresh subprocess; the driver takes its peak RSS)."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    import hest_spatialdata.readers.sample  # noqa: F401  (spatialdata's import is paid before the clock starts)
    from hest_spatialdata.tenx import import_10x
    from hest_spatialdata.tenx.xenium_alignment import XeniumToHE, read_alignment

    folder = bundle_dir(size)
    rows = pq.ParquetFile(folder / "transcripts.parquet").metadata.num_rows
    rss_after_imports = _harness.mib(_harness.current_rss())
    with _harness.Stopwatch() as clock:
        if mode == "import":
            out = WORK / "stores" / size
            shutil.rmtree(out, ignore_errors=True)
            import_10x(folder, out, "XBENCH")
        else:
            frame = pd.read_parquet(folder / "transcripts.parquet")
            warp = XeniumToHE(read_alignment(folder / "he_imagealignment.csv"), 0.2125)
            he = warp.points(frame["x_location"].to_numpy(), frame["y_location"].to_numpy())
            frame["he_x"], frame["he_y"] = he[:, 0], he[:, 1]
            assert np.isfinite(frame["he_x"]).all()
    return {"size": size, "mode": mode, "rows": rows, "seconds": round(clock.wall, 2),
            "per_second": round(rows / clock.wall), "rss_after_imports_mib": round(rss_after_imports)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["small", "1M"])
    parser.add_argument("--generate", choices=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate)
        return
    if args.measure:
        _harness.emit(measure(*args.measure))
        return
    ensure_inputs(args.sizes)
    print(_harness.machine_text(), flush=True)
    rows, peaks = [], {}
    for size in args.sizes:
        for mode in MODES:
            child = _harness.run_script(__file__, "--measure", size, mode)
            r = child.result | {"peak_rss_mib": round(_harness.mib(child.peak_rss))}
            peaks[size, mode] = r["peak_rss_mib"]
            print(json.dumps(r | {"load_1min": child.load_text}), file=sys.stderr, flush=True)
            rows.append([size, mode, f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['per_second']:,}",
                         r["peak_rss_mib"], r["rss_after_imports_mib"], child.load_text])  # fmt: skip
    header = ["size", "mode", "transcripts", "s", "transcripts/s", "peak RSS MiB", "after imports MiB", "load 1-min"]
    _harness.print_table(header, rows)
    for size in args.sizes:
        print(f"{size}: peak RSS import / pandas = {peaks[size, 'import'] / peaks[size, 'pandas']:.2f}", flush=True)
    if len(args.sizes) > 1:
        first, last = args.sizes[0], args.sizes[-1]
        for mode in MODES:
            print(f"{mode}: peak RSS {first} -> {last}: +{peaks[last, mode] - peaks[first, mode]} MiB", flush=True)
    print(_harness.machine_text(), flush=True)


if __name__ == "__main__":
    main()
