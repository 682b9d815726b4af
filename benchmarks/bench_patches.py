"""Benchmark: patch–expression pairs from a converted store (``PatchDataset``) against HEST's ``patches/{id}.h5``.

The sample is the package's example (real H&E texture, real Xenium mouse-brain spots, real nuclei) written at
``--pixel-size`` µm/px (0.5 by default: an 11k x 7k px slide, 1,554 spots) by ``write_visium_sample``, which also
writes HEST's patches h5 (224 x 224 px at 0.5 µm/px, uncompressed, one chunk per patch), then converted with
``convert_sample`` (store chunks ``DEFAULT_CHUNK_SIZE``, 512 px, zstd).

Each measurement runs in a fresh subprocess (``_harness.py``) and reads every patch of the h5's barcodes once
(one epoch):

- ``h5``: ``h5py`` ``img[i]`` in file order / shuffled: the images HEST stored, nothing else;
- ``loader``: ``PatchDataset(store, barcodes=...)[i]``: the patch cut from the store's pyramid (and resized), plus
  the spot's expression vector (all genes), shuffled or in "spatial order" (spots sorted by band of store chunks,
  as for feature extraction); the decoded-chunk cache is 256 MiB by default, ``cache=0`` turns it off (every patch
  decodes the store chunks it covers) and ``cache=1GiB`` holds the whole level, so its ``2nd epoch`` decodes
  nothing (the steady state of training for several epochs);
- ``loader 1.0um``: 224 px at 1.0 µm/px (224 µm patches, from pyramid level 1), a size the h5 does not hold.

It prints patches/s (after setup: opening the h5 / ``sd.read_zarr`` + ``PatchDataset``, timed apart; the imports
are paid before either clock starts), the peak RSS (``ru_maxrss``, imports included) and the 1-minute load average
around each run. Files are cached in ``benchmarks/_work/`` (git-ignored) and are in the OS page cache after the
first run.

``--cohort`` measures instead what issue 14 asks of ``cohort.patch_dataset(patch_size_px=224, um_per_px=0.5)``
on ``--stores`` (3) stores of the sample (at ``--pixel-size 0.27`` by default there: a 20k x 13.5k px slide, each
224-px patch a 415-px square of level 0): each store a real store folder whose ``images`` folder is a symlink to
the sample's (the loader keys its cache by store, so nothing decoded is shared between stores; only the OS page
cache is). In one fresh process per run: opening (``open_cohort`` + ``patch_dataset`` + each store's dataset;
``spatialdata`` must not be imported), the first item of each store, a shuffled first epoch read in batches of 64
(``__getitems__``, what a DataLoader asks), a second epoch, and the fidelity of the patches against HEST's h5 (mean
absolute difference per patch, median and 95th percentile); in a separate fresh process HEST's h5 read shuffled on
the same samples (the limit). ``--s3`` adds the same dataset over the stores uploaded to a loopback S3 server
(moto server mode, ``tests/s3_server.py``; one store by default, ``--s3-stores``), with its ratio to the local first
epoch and the requests per chunk read, the epoch's chunk files fetched alone (its limit on that server), the
same dataset with moto reached directly (no fault proxy), and the same chunk files fetched by s3fs (``cat``,
``cat_ranges``), obstore and zarr's ``ObjectStore``; ``--baseline-src DIR`` repeats the S3 epoch with the package of
another checkout (before/after in one run). It also times a fresh process (issue 21): a new interpreter running
``open_cohort(stores).patch_dataset(224 px, 0.5 µm/px)`` until the first item of each store, from its start, with
the import / dataset (spot tables + HEST's gene rule) / items split, the genes' hash (the same genes before and
after a change) and which of scanpy, numba, sklearn, spatialdata and torch it imported; ``--fresh-only`` prints that
row alone.

Usage::

    python benchmarks/bench_patches.py --pixel-size 0.5 --repeat 2
    python benchmarks/bench_patches.py --cohort [--s3 [--baseline-src ../main/src]]
    python benchmarks/bench_patches.py --cohort --fresh-only --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import _harness
from _patch_sample import SAMPLE_ID, WORK, ensure_sample, sample_dir

HERE = Path(__file__).resolve().parent
MODES = {
    "h5 in order": {"source": "h5", "order": "file"},
    "h5 shuffled": {"source": "h5", "order": "shuffled"},
    "loader shuffled": {"source": "loader", "order": "shuffled"},
    "loader shuffled cache=1GiB": {"source": "loader", "order": "shuffled", "cache_bytes": 2**30},
    "loader shuffled cache=1GiB 2nd epoch": {
        "source": "loader",
        "order": "shuffled",
        "cache_bytes": 2**30,
        "epochs": 2,
    },
    "loader shuffled cache=0": {"source": "loader", "order": "shuffled", "cache_bytes": 0},
    "loader spatial order": {"source": "loader", "order": "spatial"},
    "loader 1.0um shuffled": {"source": "loader", "order": "shuffled", "um_per_px": 1.0},
}


# --------------------------------------------------------------------------------------------- child process


def child(mode: str, pixel_size: float, chunk_size: int = 0) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import h5py
    import numpy as np

    options = MODES[mode]
    if options["source"] == "loader":  # imported before the clock starts: paid once per process
        import spatialdata  # noqa: F401

        from hest_spatialdata.loaders import PatchDataset
        from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE
    folder = sample_dir(pixel_size, chunk_size)
    h5_path = folder / "hest" / "patches" / f"{SAMPLE_ID}.h5"
    with _harness.Stopwatch() as setup:
        if options["source"] == "h5":
            h5 = h5py.File(h5_path, "r")
            images = h5["img"]
            read = images.__getitem__
            n = len(images)
        else:
            with h5py.File(h5_path, "r") as h5:
                barcodes = h5["barcode"].asstr()[()][:, 0]
            dataset = PatchDataset(
                folder / "stores" / f"{SAMPLE_ID}.zarr",
                um_per_px=options.get("um_per_px", 0.5),
                barcodes=barcodes,
                **({"cache_bytes": options["cache_bytes"]} if "cache_bytes" in options else {}),
            )
            read = dataset.__getitem__
            n = len(dataset)
    if options["order"] == "shuffled":
        order = np.random.default_rng(0).permutation(n)
    elif options["order"] == "spatial":  # bands of store chunks, left to right: each chunk decoded once
        x, y = dataset.centres_px[:, 0], dataset.centres_px[:, 1]
        order = np.lexsort((x, y // (chunk_size or DEFAULT_CHUNK_SIZE)))
    else:
        order = np.arange(n)
    for _ in range(options.get("epochs", 1)):  # only the last epoch is timed
        with _harness.Stopwatch() as epoch:
            for i in order.tolist():
                read(i)
    return {"n": n, "setup_s": setup.wall, "read_s": epoch.wall}


# --------------------------------------------------------------------------------------------- driver


def measure(mode: str, pixel_size: float, chunk_size: int = 0) -> dict[str, Any]:
    """One measurement in a fresh subprocess: its result, peak RSS and the load around it."""
    run = _harness.run_script(__file__, "--child", mode, pixel_size, chunk_size)
    return run.result | {"rss": run.peak_rss, "load": (run.load_before, run.load_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixel-size", type=float, default=0.5, help="µm per level-0 px of the slide")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--chunk-size", type=int, default=0, help="store image chunk side (0: the default)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    # built in a subprocess: a child's ru_maxrss starts at its parent's, so the driver must stay small
    _harness.run_script(__file__, "--build", args.pixel_size, args.chunk_size, capture=False)
    print(_harness.machine_text(), flush=True)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    for r, mode in _harness.rounds(args.modes, args.repeat):  # alternate the order: load hits all alike
        res = measure(mode, args.pixel_size, args.chunk_size)
        runs[mode].append(res)
        print(f"  {mode:>24} run {r}: {json.dumps(res)}", flush=True)
    print_table(runs)


def print_table(runs: dict[str, list[dict[str, Any]]]) -> None:
    header = ["mode", "patches", "setup s", "patches/s (best)", "patches/s (median)", "peak RSS MiB", "load 1-min"]
    rows = []
    for mode, results in runs.items():
        rates = _harness.Stats.of(r["n"] / r["read_s"] for r in results)
        setup = min(r["setup_s"] for r in results)
        rss = _harness.mib(statistics.median(r["rss"] for r in results))
        loads = _harness.load_range_text(x for r in results for x in r["load"])
        rows.append([mode, f"{results[0]['n']:,}", f"{setup:.2f}", f"{rates.max:,.0f}", f"{rates.median:,.0f}",
                     f"{rss:,.0f}", loads])  # fmt: skip
    _harness.print_table(header, rows)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] == "--cohort":
        from _bench_patch_cohort import main as cohort_main

        cohort_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--build":
        ensure_sample(float(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
