"""Benchmark: batch conversion throughput (samples/min, source GB/min) with 1 and more local workers.

Builds (once, cached in ``benchmarks/_work/``) a HEST folder of N Visium samples with
:func:`hest_spatialdata.example.write_visium_sample` (real H&E texture, real spots and counts, libvips pyramidal LZW
TIFF as HEST writes it) at the chosen pixel size, then, for each worker count, runs the real command line in a fresh
subprocess::

    hest-to-sdata convert HEST -o OUT --workers W --summary summary.json --quiet

and reports, from the wall clock and the run's JSON summary:

- ``wall s``: the whole command, spatialdata import and worker start-up included (what a user waits);
- ``samples/min`` and ``GB/min`` (source bytes: TIFF + h5ad + JSON) over that wall time;
- ``s/sample``: median conversion time of one sample inside a worker (import excluded), and the level-0 ``MPix/s``
  of one worker that gives;
- ``CPU s/sample`` and level-0 ``MPix per CPU-second``: the cost of a sample whatever the load of the machine;
- ``RSS MB``: the largest peak resident memory of a worker process;
- the 1-minute load average before and after (the machine is shared: figures scale with it).

The N samples are copies of one slide under N ids (hard links): the OS page cache then serves the sources, as it
would for a sample just downloaded. Usage::

    python benchmarks/bench_batch.py --samples 4 --pixel-size 0.6 --workers 1 2
    python benchmarks/bench_batch.py --samples 6 --pixel-size 0.5 --workers 1 2 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"


def ensure_samples(n: int, pixel_size: float) -> tuple[Path, list[str]]:
    """A HEST folder with ``n`` samples ``BATCH1..n`` (hard links of one generated sample)."""
    from hest_spatialdata.example import write_visium_sample

    root = WORK / f"batch_ps{pixel_size:g}"
    first = "BATCH1"
    if not (root / "metadata" / f"{first}.json").is_file():
        print(f"building {root} (Visium sample at {pixel_size} µm/px) ...", flush=True)
        start = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        write_visium_sample(root, first, pixel_size_um=pixel_size)
        print(f"  built in {time.perf_counter() - start:.0f} s", flush=True)
    ids = [f"BATCH{i}" for i in range(1, n + 1)]
    meta = json.loads((root / "metadata" / f"{first}.json").read_text())
    for sample_id in ids[1:]:
        for folder, suffix in (("wsis", ".tif"), ("st", ".h5ad")):
            target = root / folder / f"{sample_id}{suffix}"
            if not target.exists():
                os.link(root / folder / f"{first}{suffix}", target)
        meta.update(id=sample_id, image_filename=f"{sample_id}.tif")
        (root / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta, allow_nan=True))
    return root, ids


def run(root: Path, ids: list[str], workers: int, threads: int | None) -> dict[str, Any]:
    """One batch conversion in a fresh process; its figures."""
    out = WORK / f"batch_out_w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    summary_path = WORK / f"batch_summary_w{workers}.json"
    command = [sys.executable, "-m", "hest_spatialdata", "convert", str(root), "-o", str(out), "--quiet"]
    command += ["--workers", str(workers), "--summary", str(summary_path)] + [a for i in ids for a in ("--id", i)]
    if threads:
        command += ["--threads", str(threads)]
    child = _harness.run_child(command, capture=False, quiet=True)  # stderr shows; per-worker RSS from the summary
    wall = child.wall
    summary = json.loads(summary_path.read_text())
    done = [s for s in summary["samples"] if s["status"] == "done"]
    if len(done) != len(ids):
        raise SystemExit(f"only {len(done)} of {len(ids)} samples converted: {summary['samples']}")
    mpix = _level0_mpix(Path(done[0]["store"]))
    per_sample = statistics.median(s["seconds"] for s in done)
    cpu = statistics.median(s["cpu_seconds"] for s in done)
    source_gb = sum(s["source_bytes"] for s in done) / 1e9
    store_gb = sum(s["store_bytes"] for s in done) / 1e9
    shutil.rmtree(out, ignore_errors=True)
    return {
        "workers": workers,
        "samples": len(done),
        "wall_s": round(wall, 1),
        "samples_per_min": round(len(done) / wall * 60, 2),
        "source_gb_per_min": round(source_gb / wall * 60, 3),
        "s_per_sample": round(per_sample, 2),
        "mpix_per_s_per_worker": round(mpix / per_sample, 1),
        "cpu_s_per_sample": round(cpu, 1),
        "mpix_per_cpu_s": round(mpix / cpu, 2),
        "level0_mpix": round(mpix, 1),
        "source_gb": round(source_gb, 3),
        "store_gb": round(store_gb, 3),
        "store_over_source": round(store_gb / source_gb, 3),
        "peak_rss_mb": round(max(s["peak_rss_mb"] for s in done)),
        "load_before": round(child.load_before, 2),
        "load_after": round(child.load_after, 2),
    }


def _level0_mpix(store: Path) -> float:
    from hest_spatialdata.storage.store import store_attrs

    height, width = store_attrs(store)["slide_shape"]
    return height * width / 1e6


def main() -> None:
    """Parse arguments, run, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="number of samples in the batch")
    parser.add_argument("--pixel-size", type=float, default=0.6, help="µm per pixel of the generated slides")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--threads", type=int, default=None, help="threads writing one sample (default cores/N)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        ensure_samples(args.samples, args.pixel_size)
        return
    # Built in a child: a worker forked from a process that once held a whole slide would inherit its peak RSS.
    _harness.run_script(__file__, "--build-only", *sys.argv[1:], capture=False)
    root, ids = ensure_samples(args.samples, args.pixel_size)
    print(_harness.machine_text(), flush=True)
    results = []
    for _ in range(args.repeat):
        for workers in args.workers:
            result = run(root, ids, workers, args.threads)
            results.append(result)
            print(json.dumps(result), flush=True)
    header = ["workers", "wall_s", "samples_per_min", "source_gb_per_min", "s_per_sample", "mpix_per_s_per_worker"]
    header += ["cpu_s_per_sample", "mpix_per_cpu_s", "peak_rss_mb", "store_over_source", "load_before", "load_after"]
    _harness.print_table(header, ([r[h] for h in header] for r in results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
