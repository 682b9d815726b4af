"""Benchmark: cohorts of converted stores (``hs.open_cohort``): opening, ``expression()``, ``patch_dataset()``.

Inputs (cached in ``benchmarks/_work/``, git-ignored): the 0.5 µm/px sample of ``bench_patches.py`` (an 11k x 7k px
slide, 1,554 Visium spots x 248 genes, HEST's patches h5 beside it), converted once; then ``--stores`` (50) stores
made from it under other sample ids, ten patients: each a real store folder (its own ``zarr.json`` with its id and
patient, its own tables and shapes) whose ``images`` folder is a symlink to the original's, so 50 stores cost one
slide of disk.

Each measurement runs in a fresh subprocess (``_harness.py``):

- ``open``: ``hs.open_cohort(folder)`` and its table (zarr.json and Parquet footers only);
- ``expression``: ``cohort.expression(join="inner")`` over all the stores (every spot table read);
- ``patches 0 workers``: ``cohort.patch_dataset(genes=50 HVGs, 224 px, 0.5 µm/px)`` over ``--patch-stores`` (3) of
  the stores, every item once in a shuffled order (a first epoch), in the process;
- ``patches 2 workers``: the same epoch split into batches of 32 over a ``spawn`` pool of 2 processes (what a PyTorch
  DataLoader with ``num_workers=2`` does; the dataset is pickled to each worker, which opens its stores), timed
  once both workers are up (their start-up, imports and store opening, is printed apart as ``startup_s``); each
  worker has its own chunk cache, so on a first epoch both decode most chunks;
- ``h5``: HEST's own ``patches/{id}.h5``, ``img[i]`` shuffled (the images, nothing else), for reference.

It prints wall seconds or items/s, the peak RSS (``ru_maxrss``) and the 1-minute load around each run.

Usage::

    python benchmarks/bench_cohort.py --stores 50 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
SOURCE_ID = "BENCHPATCH"
PIXEL_SIZE_UM = 0.5
INPUT_VERSION = 1
BATCH = 32
MODES = ["open", "expression", "patches 0 workers", "patches 2 workers", "h5"]


def source_dir() -> Path:
    return WORK / f"patches_ps{PIXEL_SIZE_UM}_v2"  # bench_patches.py's sample (its INPUT_VERSION 2)


def cohort_dir(n_stores: int) -> Path:
    return WORK / f"cohort_{n_stores}_v{INPUT_VERSION}"


def ensure_inputs(n_stores: int) -> None:
    """Build (once) the source store and ``n_stores`` stores made from it."""
    folder = cohort_dir(n_stores)
    if (folder / "done").is_file():
        return
    if not (source_dir() / "done").is_file():
        from _patch_sample import ensure_sample

        ensure_sample(PIXEL_SIZE_UM)
    source = source_dir() / "stores" / f"{SOURCE_ID}.zarr"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "stores").mkdir(parents=True)
    for i in range(n_stores):
        sample_id = f"COH{i:03d}"
        target = folder / "stores" / f"{sample_id}.zarr"
        shutil.copytree(source, target, ignore=lambda d, names: ["images"] if Path(d) == source else [])
        (target / "images").symlink_to(source / "images", target_is_directory=True)
        root = json.loads((target / "zarr.json").read_text())
        hest = root["attributes"]["hest"]
        hest["sample_id"] = sample_id
        hest["metadata"] |= {"id": sample_id, "patient": f"PATIENT_{i % 10}"}
        (target / "zarr.json").write_text(json.dumps(root))
    (folder / "done").write_text("ok\n")


# --------------------------------------------------------------------------------------------- child process

_WORKER_DATASET: Any = None


def _init_worker(dataset: Any) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = dataset
    for sample_id in dataset.stores:  # what a DataLoader worker does on its first items of each sample
        dataset.dataset(sample_id)


def _ping(_: int) -> int:
    return 0


def _fetch(batch: list[int]) -> int:
    for index in batch:
        _WORKER_DATASET[index]
    return len(batch)


def child(mode: str, n_stores: int, patch_stores: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import h5py
    import numpy as np

    import hest_spatialdata as hs

    stores = cohort_dir(n_stores) / "stores"
    if mode == "h5":
        with h5py.File(source_dir() / "hest" / "patches" / f"{SOURCE_ID}.h5", "r") as h5:
            images = h5["img"]
            order = np.random.default_rng(0).permutation(len(images))
            with _harness.Stopwatch() as read:
                for i in order.tolist():
                    images[i]
        return {"n": len(order), "s": read.wall}
    if mode == "open":
        with _harness.Stopwatch() as opening:
            cohort = hs.open_cohort(stores)
            table = cohort.table
        return {"n": len(table), "s": opening.wall, "spatialdata_imported": "spatialdata" in sys.modules}
    if mode == "expression":
        cohort = hs.open_cohort(stores)
        with _harness.Stopwatch() as building:
            adata = cohort.expression(join="inner")
        return {"n": adata.n_obs, "genes": adata.n_vars, "s": building.wall}
    import multiprocessing

    cohort = hs.open_cohort(stores).subset([f"COH{i:03d}" for i in range(patch_stores)])
    with _harness.Stopwatch() as setup:
        dataset = cohort.patch_dataset(patch_size_px=224, um_per_px=PIXEL_SIZE_UM)
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    if mode == "patches 0 workers":
        with _harness.Stopwatch() as epoch:
            for i in order:
                dataset[i]
    else:
        batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
        context = multiprocessing.get_context("spawn")
        with _harness.Stopwatch() as startup:
            pool = context.Pool(2, initializer=_init_worker, initargs=(dataset,))
            pool.map(_ping, range(8), chunksize=1)  # both workers started, imports done, stores opened
        with _harness.Stopwatch() as epoch:
            done = sum(pool.imap_unordered(_fetch, batches))
        pool.close()
        pool.join()
        assert done == len(order)
        return {"n": len(order), "s": epoch.wall, "setup_s": setup.wall, "startup_s": startup.wall}
    return {"n": len(order), "s": epoch.wall, "setup_s": setup.wall}


# --------------------------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=50, help="stores in the cohort")
    parser.add_argument("--patch-stores", type=int, default=3, help="stores the patch dataset reads")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    _harness.run_script(__file__, "--build", args.stores, capture=False)
    print(_harness.machine_text(), flush=True)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    for r, mode in _harness.rounds(args.modes, args.repeat):
        run = _harness.run_script(__file__, "--child", mode, args.stores, args.patch_stores)
        res = run.result | {"rss": run.peak_rss, "load": (run.load_before, run.load_after)}
        runs[mode].append(res)
        print(f"  {mode:>18} run {r}: {json.dumps(res)}", flush=True)
    rows = []
    for mode, results in runs.items():
        best = min(r["s"] for r in results)
        per_s = _harness.Stats.of(r["n"] / r["s"] for r in results)
        what = "stores" if mode == "open" else "spots" if mode == "expression" else "items"
        rss = _harness.mib(statistics.median(r["rss"] for r in results))
        loads = _harness.load_range_text(x for r in results for x in r["load"])
        rows.append([mode, f"{results[0]['n']:,} {what}", f"{best:.2f}", f"{per_s.max:,.0f}", f"{rss:,.0f}", loads])
    _harness.print_table(["what", "size", "wall s (best)", "per s (best)", "peak RSS MiB", "load 1-min"], rows)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--build":
        ensure_inputs(int(sys.argv[2]))
    else:
        main()
