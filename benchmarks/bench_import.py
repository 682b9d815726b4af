"""``hest-to-sdata import`` of a Space Ranger run: wall time and peak memory against the slide's size.

The run is :func:`hest_spatialdata.example.spaceranger.write_visium_run` (real Visium v1 spots over the real Xenium
mouse-brain cells) at ``--pixel-size`` µm/px, with its H&E written pyramidal (HEST's layout: the levels are reused)
and flat (the importer builds the levels lazily). Each import runs in a fresh process (``_harness.run_child``):
its wall time, its peak RSS next to the raw size of the slide's level 0 (the importer streams it: the peak should
stay well below it), and the machine's load around it.

Usage::

    python benchmarks/bench_import.py                       # 0.5 µm/px: a 11.6k x 7.9k px slide (275 MB raw)
    python benchmarks/bench_import.py --pixel-size 2 --repeat 1   # a smoke run
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "import"
LAYOUTS = ("pyramidal", "flat")


def build(pixel_size_um: float) -> dict[str, tuple[Path, Path]]:
    """The run for each H&E layout, built once per pixel size (cached under ``benchmarks/_work/import``)."""
    from hest_spatialdata.example.spaceranger import write_visium_run

    runs = {}
    for layout in LAYOUTS:
        folder = WORK / f"{pixel_size_um:g}um_{layout}"
        outs, he = folder / "outs", folder / "he.tif"
        if not he.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            outs, he = write_visium_run(folder, pixel_size_um=pixel_size_um, pyramid=layout == "pyramidal")
        runs[layout] = (outs, he)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixel-size", type=float, default=0.5, help="µm per px of the H&E [0.5]")
    parser.add_argument("--repeat", type=int, default=2, help="imports of each layout, in alternating order [2]")
    args = parser.parse_args()
    import tifffile

    print(_harness.machine_text())
    runs = build(args.pixel_size)
    rows = []
    for _, layout in _harness.rounds(LAYOUTS, args.repeat):
        outs, he = runs[layout]
        out = WORK / "stores" / layout
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "hest_spatialdata", "import", outs, "-o", out, "--id", "RUN", "--image", he]
        run = _harness.run_child(command)
        height, width = tifffile.TiffFile(he).series[0].shape[:2]
        raw = height * width * 3
        rows.append([
            layout, f"{width} x {height}", f"{_harness.mib(raw):.0f}", f"{run.wall:.1f}",
            f"{_harness.mib(run.peak_rss or 0):.0f}", f"{(run.peak_rss or 0) / raw:.2f}", run.load_text,
        ])  # fmt: skip
    _harness.print_table(
        ["H&E", "level 0 (px)", "raw MiB", "import s", "peak RSS MiB", "RSS / raw", "load"],
        rows,
        note="each import in a fresh process (spatialdata, spatialdata-io imported in it); load = 1-min average",
    )


if __name__ == "__main__":
    main()
