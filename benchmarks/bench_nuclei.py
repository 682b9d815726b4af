"""Benchmark: HEST CellViT nuclei (GeoParquet and zipped GeoJSON) -> ``nuclei`` shapes element -> Zarr.

The input is real nuclei (cellseg_gsontools' ``gland_cells`` and ``ts_iface_cells``, shipped in
``hest_spatialdata/example_data``) tiled side by side until there are ``--nuclei`` of them (500k by default, the
size of a large HEST sample: TENX95 has 497,508), written in HEST's two layouts by
``hest_spatialdata.example.write_cellvit``: ``{id}_cellvit_seg.parquet`` and ``{id}_cellvit_seg.geojson.zip``
(compact JSON; ``--hest-indent`` writes it with HEST's ``indent=4``, four times larger unzipped).

Each measurement runs in a fresh subprocess (``_harness.py``) and prints, after spatialdata is imported:

- ``read``: ``read_cellvit(path, ctx)`` -> the validated ``ShapesModel`` element;
- ``write``: ``SpatialData(shapes={"nuclei": element}).write(...)``;
- polygons/s for read and for read + write, and the peak RSS of the process (``ru_maxrss``, imports included) next
  to its peak RSS once spatialdata and the reader are imported (the inputs are built in another subprocess, so no
  child inherits a large parent's ``ru_maxrss``).

Then what ``nuclei_labels`` adds to a conversion: ``convert_sample`` (``bench_napari.py --child-convert``, every
element) of the ``--labels-samples`` of ``bench_napari.py`` (``12k``: 37k nuclei on 11,984 x 8,000 px; ``300k``:
330k nuclei on 2,980 x 2,000 px), with and without ``nuclei_labels``, alternating, each in a fresh process: the
added fraction (best of each, and the median of the runs) next to the goal (<= 25 %) and the load.

``--reference`` adds HEST's own GeoJSON reader for comparison (``json.load`` then one shapely ``Polygon`` per nucleus,
as ``hest.io.seg_readers.read_geojson`` does). The 1-minute load average is recorded around every run. Inputs are
cached in ``benchmarks/_work/`` (git-ignored).

Usage::

    python benchmarks/bench_nuclei.py --nuclei 500000 --repeat 2
    python benchmarks/bench_nuclei.py --nuclei 500000 --hest-indent --reference
    python benchmarks/bench_nuclei.py --nuclei 0 --labels-samples 12k 300k --repeat 3   # the labels cost only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
SAMPLE_ID = "BENCHNUC"
#: What ``nuclei_labels`` may add to a conversion (issue 14).
LABELS_GOAL = 0.25
#: Bump when the input changes, so cached inputs are rebuilt.
INPUT_VERSION = 1


def input_dir(n: int, indent: bool) -> Path:
    return WORK / f"nuclei_{n}{'_indent' if indent else ''}_v{INPUT_VERSION}"


def ensure_inputs(n: int, indent: bool) -> tuple[Path, tuple[int, int]]:
    """Build (once) the parquet and geojson.zip of ``n`` tiled real nuclei; returns the folder and slide shape."""
    folder = input_dir(n, indent)
    shape_file = folder / "slide_shape.json"
    if shape_file.is_file():
        return folder, tuple(json.loads(shape_file.read_text()))
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely

    from hest_spatialdata import example

    print(f"building {n} nuclei in {folder} ...", flush=True)
    tiles = example.nuclei_tiles()
    per_tile = sum(len(t) for t in tiles) / len(tiles)
    n_tiles = int(np.ceil(n / per_tile)) + 1
    side = int(np.ceil(np.sqrt(n_tiles)))
    step = example.NUCLEI_TILE_SIDE_PX
    parts = []
    for k in range(n_tiles):
        origin = np.array([[(k % side) * step, (k // side) * step]], dtype=float)
        parts.append(example.translated_copies(tiles[k % len(tiles)], origin, 1.0))
    nuclei = pd.concat(parts, ignore_index=True).iloc[:n]
    nuclei = nuclei.sort_values("class", kind="stable").reset_index(drop=True)
    frame = gpd.GeoDataFrame(geometry=nuclei.geometry.to_numpy())
    frame["class"] = nuclei["class"].astype(str).to_numpy()
    frame["cell_id"] = np.arange(len(frame))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    example.write_cellvit(partial, SAMPLE_ID, frame)
    if indent:
        _rewrite_with_indent(partial / f"{SAMPLE_ID}_cellvit_seg.geojson.zip")
    xmax, ymax = shapely.total_bounds(frame.geometry.to_numpy())[2:]
    (partial / "slide_shape.json").write_text(json.dumps([int(ymax) + 1, int(xmax) + 1]))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder, tuple(json.loads(shape_file.read_text()))


def _rewrite_with_indent(archive: Path) -> None:
    name = f"{SAMPLE_ID}_cellvit_seg.geojson"
    with zipfile.ZipFile(archive) as zf:
        features = json.loads(zf.read(name))
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, json.dumps(features, indent=4))


# --------------------------------------------------------------------------------------------- child process


def child(mode: str, folder: Path, slide_shape: tuple[int, int]) -> dict[str, Any]:
    """One measurement, in this (fresh) process; its peak RSS is measured by the driver."""
    import spatialdata as sd

    from hest_spatialdata._constants import Technology
    from hest_spatialdata.readers._context import SampleContext
    from hest_spatialdata.readers.cellvit import read_cellvit

    rss_imports = _harness.peak_rss()
    ctx = SampleContext(SAMPLE_ID, 0.25, Technology.VISIUM, slide_shape)
    path = folder / f"{SAMPLE_ID}_cellvit_seg.{'parquet' if mode == 'parquet' else 'geojson.zip'}"
    if mode == "hest-reference":
        with _harness.Stopwatch() as read:
            n = len(_hest_read_geojson_zip(path))
        return {"n": n, "read_s": read.wall, "write_s": None, "rss_imports": rss_imports}
    with _harness.Stopwatch() as read:
        nuclei = read_cellvit(path, ctx)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp, _harness.Stopwatch() as write:  # cleanup not timed
        sd.SpatialData(shapes={"nuclei": nuclei}).write(Path(tmp) / "n.zarr")
    return {"n": len(nuclei), "read_s": read.wall, "write_s": write.wall, "rss_imports": rss_imports}


def _hest_read_geojson_zip(path: Path) -> Any:
    """HEST's ``read_geojson`` (seg_readers.py) on the unzipped file: one shapely Polygon per nucleus."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Polygon

    with zipfile.ZipFile(path) as zf:
        features = json.loads(zf.read(zf.namelist()[0]))
    parts = []
    for x in features:
        polygons = [Polygon(x["geometry"]["coordinates"][i][0]) for i in range(len(x["geometry"]["coordinates"]))]
        part = gpd.GeoDataFrame(geometry=polygons)
        part["class"] = [x["properties"]["classification"]["name"] for _ in range(len(part))]
        parts.append(part)
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True))


# --------------------------------------------------------------------------------------------- driver


def measure(mode: str, folder: Path, slide_shape: tuple[int, int]) -> dict[str, Any]:
    """One measurement in a fresh subprocess: its result, peak RSS and the load around it."""
    run = _harness.run_script(__file__, "--child", mode, folder, json.dumps(slide_shape))
    return run.result | {"rss": run.peak_rss, "load": (run.load_before, run.load_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nuclei", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--hest-indent", action="store_true", help="write the GeoJSON with HEST's indent=4")
    parser.add_argument("--reference", action="store_true", help="also time HEST's own GeoJSON reader")
    parser.add_argument("--labels-samples", nargs="*", default=["12k", "300k"], help="bench_napari.py samples")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.nuclei:
        read_and_write(args)
    if args.labels_samples:
        labels_cost(args.labels_samples, args.repeat)


def read_and_write(args: argparse.Namespace) -> None:
    """The read and write table of the nuclei of ``args.nuclei``."""
    # built in a subprocess: a child's ru_maxrss starts at its parent's, so the driver must stay small
    _harness.run_script(__file__, "--build", args.nuclei, int(args.hest_indent), capture=False)
    folder = input_dir(args.nuclei, args.hest_indent)
    slide_shape = tuple(json.loads((folder / "slide_shape.json").read_text()))
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    print(f"inputs: {folder} {json.dumps(sizes)}; slide {slide_shape[1]} x {slide_shape[0]} px")
    print(_harness.machine_text(), flush=True)
    modes = ["parquet", "geojson.zip"] + (["hest-reference"] if args.reference else [])
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for r, mode in _harness.rounds(modes, args.repeat):  # alternate the order: load hits every mode alike
        res = measure(mode, folder, slide_shape)
        runs[mode].append(res)
        print(f"  {mode:>14} run {r}: {json.dumps(res)}", flush=True)
    print_table(runs)


def labels_cost(samples: list[str], repeat: int) -> None:
    """What ``nuclei_labels`` adds to the conversion of each sample, with and without it in the same run."""
    napari_bench = HERE / "bench_napari.py"
    for key in samples:
        _harness.run_script(napari_bench, "--build", key, capture=False)
    print(_harness.machine_text(), flush=True)
    rows = []
    for key in samples:
        runs: dict[str, list[dict[str, Any]]] = {"0": [], "1": []}
        for r, labels in _harness.rounds(["0", "1"], repeat):
            run = _harness.run_script(napari_bench, "--child-convert", key, labels)
            runs[labels].append(run.result | {"load": run.load, "rss": run.peak_rss})
            print(f"  convert {key} labels={labels} run {r}: {json.dumps(runs[labels][-1])}", flush=True)
        rows.append(_labels_row(key, runs["0"], runs["1"]))
    _harness.print_table(
        ["sample", "convert s without labels (min, median)", "with labels", "added wall (min / median)",
         "CPU s without / with (median)", "added CPU", "goal", "labels MiB", "peak RSS MiB with", "load 1-min"],
        rows,
        note="convert: convert_sample with every element, without and with nuclei_labels, in fresh processes "
        "(imports not timed); added = with / without - 1; CPU = user + sys of every thread (steadier under load); "
        "the goal applies to the wall time on a quiet machine.",
    )  # fmt: skip


def _labels_row(key: str, without: list[dict[str, Any]], with_: list[dict[str, Any]]) -> list[str]:
    plain = _harness.Stats.of(r["seconds"] for r in without)
    labelled = _harness.Stats.of(r["seconds"] for r in with_)
    added_min = labelled.min / plain.min - 1
    added_median = labelled.median / plain.median - 1
    verdict = "ok" if added_median <= LABELS_GOAL else "over"
    cpu_plain = _harness.Stats.of(r["cpu_seconds"] for r in without).median
    cpu_labelled = _harness.Stats.of(r["cpu_seconds"] for r in with_).median
    rss = _harness.mib(max(r["rss"] or 0 for r in with_))
    loads = _harness.load_range_text(r["load"] for r in without + with_)
    return [key, f"{plain.min:.1f}, {plain.median:.1f}", f"{labelled.min:.1f}, {labelled.median:.1f}",
            f"{added_min:+.0%} / {added_median:+.0%}", f"{cpu_plain:.1f} / {cpu_labelled:.1f}",
            f"{cpu_labelled / cpu_plain - 1:+.0%}", f"<= {LABELS_GOAL:+.0%} ({verdict})",
            f"{_harness.mib(with_[0]['labels_bytes']):.1f}", f"{rss:,.0f}", loads]  # fmt: skip


def print_table(runs: dict[str, list[dict[str, Any]]]) -> None:
    header = ["source", "nuclei", "read s (min)", "read polygons/s", "write s", "read+write polygons/s",
              "peak RSS MiB", "RSS after imports MiB", "load 1-min"]  # fmt: skip
    rows = []
    for mode, results in runs.items():
        best = min(results, key=lambda r: r["read_s"] + (r["write_s"] or 0))
        n, read_s, write_s = best["n"], best["read_s"], best["write_s"]
        write = "-" if write_s is None else f"{write_s:.2f}"
        total = "-" if write_s is None else f"{n / (read_s + write_s):,.0f}"
        rss = _harness.mib(statistics.median(r["rss"] for r in results))
        rss_imports = _harness.mib(statistics.median(r["rss_imports"] for r in results))
        loads = _harness.load_range_text(x for r in results for x in r["load"])
        rows.append([mode, f"{n:,}", f"{read_s:.2f}", f"{n / read_s:,.0f}", write, total, f"{rss:,.0f}",
                     f"{rss_imports:,.0f}", loads])  # fmt: skip
    _harness.print_table(header, rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(sys.argv[2], Path(sys.argv[3]), tuple(json.loads(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--build":
        ensure_inputs(int(sys.argv[2]), bool(int(sys.argv[3])))
    else:
        main()
