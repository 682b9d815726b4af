"""Benchmark: ``hs.embed`` throughput (patches/s) with a small CPU encoder, next to the patch dataset's own rate.

Inputs: ``--stores`` (3) stores of ``bench_cohort.py`` (the 0.5 µm/px sample of ``bench_patches.py``, 1,554 Visium
spots each, the slide shared through a symlink), built once in ``benchmarks/_work/``. Each measurement runs in a fresh
subprocess (``_harness.py``), in alternating order over ``--repeat`` rounds:

- ``patches``: the cohort patch dataset's items (224 px at 0.5 µm/px) in the order ``embed`` reads them (each sample's
  spots in turn), stacked into batches of ``--batch-size``: the rate the encoder is fed at;
- ``encoder``: the built-in ``histogram`` encoder alone on one batch of those patches, repeated: its own rate;
- ``embed``: ``hs.embed(stores, "histogram", spots="all", overwrite=True)``: patches, encoder and the atomic write of
  the two elements into every store (every spot, as the two others read).

Printed per run: patches/s, CPU seconds (user+sys of the process) and the 1-minute load around it; then a table with
the best rates and ``embed`` as a fraction of its limit measured in the same run: reading the patches then encoding
them, one after the other, ``1 / (1 / patches + 1 / encoder)`` (1.0: nothing lost around them; the write and the
store bookkeeping are what is below it).

Usage::

    python benchmarks/bench_embed.py --stores 3 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
MODES = ["patches", "encoder", "embed"]


def child(mode: str, n_stores: int, batch_size: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import numpy as np
    from bench_cohort import cohort_dir

    import hest_spatialdata as hs
    from hest_spatialdata.benchmark import as_encoder

    stores = cohort_dir(n_stores) / "stores"
    if mode == "embed":
        with _harness.Stopwatch() as run:
            status = hs.embed(stores, "histogram", batch_size=batch_size, spots="all", overwrite=True, progress=False)
        n = sum(hs.open_cohort(stores).table["n_spots"])
        assert set(status.values()) == {"written"}
        return {"n": int(n), "s": run.wall, "cpu": run.cpu}
    dataset = hs.open_cohort(stores).patch_dataset(genes=[], patch_size_px=224, um_per_px=0.5)
    if mode == "patches":
        order = [i for s in dataset.stores for i in dataset.items_of([s]).tolist()]
        with _harness.Stopwatch() as run:
            for start in range(0, len(order), batch_size):
                np.stack([dataset[i][0] for i in order[start : start + batch_size]])
        return {"n": len(order), "s": run.wall, "cpu": run.cpu}
    encoder = as_encoder("histogram")
    batch = np.stack([dataset[i][0] for i in range(batch_size)])
    repeats = max(1, len(dataset) // batch_size)
    with _harness.Stopwatch() as run:
        for _ in range(repeats):
            encoder(batch)
    return {"n": repeats * batch_size, "s": run.wall, "cpu": run.cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=3, help="stores embedded")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    _harness.run_script(HERE / "bench_cohort.py", "--build", args.stores, capture=False)
    print(_harness.machine_text(), flush=True)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for r, mode in _harness.rounds(MODES, args.repeat):
        run = _harness.run_script(__file__, "--child", mode, args.stores, args.batch_size)
        res = run.result | {"per_s": run.result["n"] / run.result["s"], "load": run.load_text}
        runs[mode].append(res)
        print(f"  {mode:>8} run {r}: {json.dumps(res)}", flush=True)
    best = {mode: max(r["per_s"] for r in results) for mode, results in runs.items()}
    limit = 1 / (1 / best["patches"] + 1 / best["encoder"])
    rows = [
        [mode, f"{results[0]['n']:,}", f"{best[mode]:,.0f}", f"{min(r['cpu'] for r in results):.1f}",
         f"{best[mode] / limit:.2f}" if mode == "embed" else "", ", ".join(r["load"] for r in results)]
        for mode, results in runs.items()
    ]  # fmt: skip
    _harness.print_table(
        ["what", "patches", "patches/s (best)", "CPU s (best)", "embed / limit", "load 1-min"],
        rows,
        note=f"224 px at 0.5 µm/px, batch of {args.batch_size}; "
        f"limit = patches then encoder, 1 / (1/patches + 1/encoder) = {limit:,.0f}/s",
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        main()
