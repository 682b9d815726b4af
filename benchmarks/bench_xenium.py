"""Benchmark: Xenium transcripts -> ``transcripts`` points + ``xenium_cell_table``, and boundaries -> shapes.

Inputs are written by ``hest_spatialdata.example`` from the real Xenium mouse-brain run (36,602 cells):

- ``XBENCH``: the whole run, every real count one transcript plus 3 % low-quality and 8 % unassigned ones
  (~10M transcripts in 1Mi-row row groups, pyarrow's default, as HEST's files have), bytes cell ids and feature names;
- ``XBENCH5M``, ``XBENCH1M``: crops of the same run with ~5M and ~1M transcripts, to show how peak memory follows
  (or not) the number of transcripts;
- ``XPOLY``: ~512k cell boundaries (the real cells tiled 7 x 2, real areas, 12 vertices, bytes ids).

Each measurement runs ``convert_sample(..., elements=[...])`` (what ``hest-to-sdata convert --elements`` does) in a
fresh subprocess (``_harness.py``) and reports its wall time, throughput and peak RSS (``ru_maxrss``, imports
included, and the RSS right after the imports, so the difference is what the conversion itself costs). The
1-minute load average is recorded around each run: these machines have 2 cores shared with other users. Inputs are
cached in ``benchmarks/_work/xenium/`` (git-ignored).

Usage::

    python benchmarks/bench_xenium.py                 # all measurements
    python benchmarks/bench_xenium.py --only points table
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "xenium"
PIXEL_SIZE_UM = 2.0  # the slide is not measured here; a coarse one keeps the inputs quick to build
#: Bump when the generator changes, so cached inputs are rebuilt.
INPUT_VERSION = 2
CROP_1M = (2600.0, 1700.0, 3900.0, 2500.0)  # Xenium µm, ~1M transcripts
CROP_5M = (0.0, 0.0, 3300.0, 4000.0)  # ~5M transcripts
POLY_TILES = (7, 2)
MEASUREMENTS = {
    "points": ("XBENCH", ["transcripts"]),
    "table": ("XBENCH", ["xenium_cells", "xenium_cell_table"]),
    "all": ("XBENCH", ["transcripts", "xenium_cells", "xenium_nuclei", "xenium_cell_table"]),
    "points-5M": ("XBENCH5M", ["transcripts"]),
    "table-5M": ("XBENCH5M", ["xenium_cells", "xenium_cell_table"]),
    "points-1M": ("XBENCH1M", ["transcripts"]),
    "table-1M": ("XBENCH1M", ["xenium_cells", "xenium_cell_table"]),
    "shapes": ("XPOLY", ["xenium_cells"]),
}


def root() -> Path:
    return WORK / f"v{INPUT_VERSION}"


def ensure_inputs() -> None:
    """Write the benchmark samples once (in a subprocess, so their memory does not count)."""
    marker = root() / "complete"
    if marker.exists():
        return
    shutil.rmtree(root(), ignore_errors=True)
    _harness.run_script(__file__, "--generate", capture=False)
    marker.write_text("ok")


def generate() -> None:
    from hest_spatialdata.example import write_xenium_sample

    t0 = time.perf_counter()
    write_xenium_sample(root(), "XBENCH", pixel_size_um=PIXEL_SIZE_UM, geojson=False)
    write_xenium_sample(root(), "XBENCH5M", pixel_size_um=PIXEL_SIZE_UM, crop_um=CROP_5M, geojson=False)
    write_xenium_sample(root(), "XBENCH1M", pixel_size_um=PIXEL_SIZE_UM, crop_um=CROP_1M, geojson=False)
    write_polygons(root(), "XPOLY")
    print(f"inputs written in {time.perf_counter() - t0:.0f} s", flush=True)


def write_polygons(hest_dir: Path, sample_id: str) -> None:
    """~512k real-sized cell boundaries (the real run tiled) as HEST's GeoParquet, plus a metadata JSON."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely

    from hest_spatialdata.example import star_polygons, write_metadata, xenium_cell_ids, xenium_mouse_brain

    ps = 0.2125
    cells = xenium_mouse_brain().cells
    x, y = cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()
    span = np.array([x.max() + 50, y.max() + 50])
    nx, ny = POLY_TILES
    offsets = np.array([(i, j) for j in range(ny) for i in range(nx)]) * span
    centres = (np.column_stack([x, y])[None] + offsets[:, None]).reshape(-1, 2) / ps
    areas = np.tile(cells["cell_area"].to_numpy(), nx * ny) / ps**2
    vertices = star_polygons(centres, areas)
    polygons = shapely.polygons(np.concatenate([vertices, vertices[:, :1]], axis=1))
    ids = [i.encode() for i in xenium_cell_ids(np.arange(1, len(centres) + 1))]
    folder = hest_dir / "xenium_seg"
    folder.mkdir(parents=True, exist_ok=True)
    gdf = gpd.GeoDataFrame(geometry=polygons, index=pd.Index(ids, dtype=object))
    gdf.to_parquet(folder / f"{sample_id}_xenium_cell_seg.parquet")
    width, height = (span * [nx, ny] / ps).astype(int) + 1
    meta = {"id": sample_id, "st_technology": "Xenium", "pixel_size_um_estimated": ps,
            "fullres_px_width": int(width), "fullres_px_height": int(height)}  # fmt: skip
    write_metadata(hest_dir / "metadata" / f"{sample_id}.json", meta)


def measure(name: str) -> dict[str, Any]:
    """Run one measurement in this process (called in a fresh subprocess; the driver measures its peak RSS)."""
    import pyarrow.parquet as pq

    import hest_spatialdata.readers.sample  # noqa: F401  (spatialdata's ~5 s import is paid once per process, not timed)
    from hest_spatialdata.storage.store import convert_sample

    sample_id, elements = MEASUREMENTS[name]
    rss_after_imports = _harness.mib(_harness.current_rss())
    out = WORK / "stores" / name
    shutil.rmtree(out, ignore_errors=True)
    with _harness.Stopwatch() as clock:
        store = convert_sample(root(), sample_id, out, elements=elements)
    seconds = clock.wall
    if sample_id == "XPOLY":
        items = pq.ParquetFile(root() / "xenium_seg" / f"{sample_id}_xenium_cell_seg.parquet").metadata.num_rows
        unit = "polygons"
    else:
        items = pq.ParquetFile(root() / "transcripts" / f"{sample_id}_transcripts.parquet").metadata.num_rows
        unit = "rows"
    return {
        "measurement": name,
        "elements": elements,
        "items": items,
        "unit": unit,
        "seconds": round(seconds, 2),
        "per_second": round(items / seconds),
        "rss_after_imports_mib": round(rss_after_imports),
        "store_mib": round(sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20, 1),
    }


def run(name: str) -> dict[str, Any]:
    """One measurement in a fresh subprocess: its result, peak RSS and the load around it."""
    child = _harness.run_script(__file__, "--measure", name)
    return child.result | {
        "peak_rss_mib": round(_harness.mib(child.peak_rss)),
        "load_1min": [round(child.load_before, 2), round(child.load_after, 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), help="measurements to run [default: all]")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=list(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate()
        return
    if args.measure:
        _harness.emit(measure(args.measure))
        return
    ensure_inputs()
    print(_harness.machine_text(), flush=True)
    rows = []
    for name in args.only or list(MEASUREMENTS):
        r = run(name)
        load = _harness.load_text(*r["load_1min"])
        print(
            f"  {name:<10} {r['items']:>11,} {r['unit']}, {r['seconds']:.1f} s, {r['per_second']:,}/s, "
            f"peak RSS {r['peak_rss_mib']} MiB (after imports {r['rss_after_imports_mib']}), load {load}",
            flush=True,
        )
        print(json.dumps(r), file=sys.stderr, flush=True)
        rows.append([name, f"{r['items']:,} {r['unit']}", f"{r['seconds']:.1f}", f"{r['per_second']:,}",
                     r["peak_rss_mib"], r["rss_after_imports_mib"], r["store_mib"], load])  # fmt: skip
    header = ["measurement", "items", "s", "items/s", "peak RSS MiB", "after imports MiB", "store MiB", "load 1-min"]
    _harness.print_table(header, rows)
    print(_harness.machine_text(), flush=True)


if __name__ == "__main__":
    main()
