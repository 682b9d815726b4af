"""Benchmark: opening HEST stores in napari, time to each default layer and memory; what ``nuclei_labels`` costs.

Samples (built once into ``benchmarks/_work/napari/``, git-ignored, by ``_napari_samples.py``):

- ``example``: the example sample (``hest_spatialdata.example``) at its default pixel size;
- ``3k``: the example at 1.85 µm/px (2,980 x 2,000 px) with a real HEST tissue contour (MEND90, 28,403 vertices);
- ``12k``: the same at 0.46 µm/px (11,984 x 8,000 px), ~37k nuclei;
- ``300k``: the 3k sample with its nuclei multiplied to ~330k (shrunken copies tiled in place of each).

Each measurement runs in a fresh subprocess (``_harness.py``), under ``xvfb-run`` when there is no ``DISPLAY``:

- ``convert``: ``convert_sample`` with every element, and without ``nuclei_labels``: wall time, peak RSS, store and
  labels size;
- ``open``: a 1280 x 900 napari window, ``viewer.open(store, plugin="hest-spatialdata")``, then the time at which
  each default layer is in the viewer and the first frame after the last one was drawn, and the peak RSS;
  ``open-nolabels`` opens the store written without ``nuclei_labels`` (nuclei rasterised on the fly);
  ``--triangulation pure_python`` repeats ``open`` with napari's pure-Python Shapes triangulation.

Usage::

    python benchmarks/bench_napari.py                      # every sample
    python benchmarks/bench_napari.py --samples 3k 12k --triangulation pure_python
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "napari"
#: sample key -> (sample id, µm per px, nuclei multiplied by)
SAMPLES = {
    "example": ("EXAMPLE1", None, 1),
    "3k": ("S3K", 1.85, 1),
    "12k": ("S12K", 0.46, 1),
    "300k": ("S300K", 1.85, 9),
}
#: Bump when the inputs change, so they are rebuilt.
INPUT_VERSION = 1
WINDOW = (1280, 900)


def build(key: str) -> Path:
    """The HEST root of one sample (built once)."""
    sample_id, pixel_size, copies = SAMPLES[key]
    root = WORK / f"hest_v{INPUT_VERSION}"
    if key == "example":
        from hest_spatialdata.example import write_visium_sample

        if not (root / "metadata" / f"{sample_id}.json").is_file():
            write_visium_sample(root, sample_id)
        return root
    from _napari_samples import write_sample

    return write_sample(root, sample_id, pixel_size, nuclei_copies=copies)


def child_convert(key: str, labels: bool) -> dict[str, Any]:
    from hest_spatialdata._constants import Elements
    from hest_spatialdata.storage.store import convert_sample

    sample_id = SAMPLES[key][0]
    elements = [e.value for e in Elements if labels or e != Elements.NUCLEI_LABELS]
    out = WORK / f"stores_v{INPUT_VERSION}_{'labels' if labels else 'nolabels'}"
    start, cpu = time.perf_counter(), time.process_time()
    store = convert_sample(build(key), sample_id, out, elements=elements, overwrite=True)
    wall = time.perf_counter() - start
    labels_dir = store / "labels"
    return {
        "seconds": wall,
        "cpu_seconds": time.process_time() - cpu,  # every thread's user + sys: steadier than wall under load
        "store_bytes": _size(store),
        "labels_bytes": _size(labels_dir) if labels_dir.exists() else 0,
    }


def child_open(store: Path, triangulation: str) -> dict[str, Any]:
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    import hest_spatialdata.napari._layers as layers_module

    if triangulation != "bermuda":  # keep napari's other backend: our reader would select bermuda
        get_settings().experimental.triangulation_backend = triangulation
        layers_module.use_compiled_triangulation = lambda: triangulation
    start = time.perf_counter()
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(*WINDOW)
    app = QApplication.instance()
    app.processEvents()
    viewer_ready = time.perf_counter() - start
    start = time.perf_counter()  # from here on: the time a user waits after asking to open the store
    viewer.open(store, plugin="hest-spatialdata")
    returned = time.perf_counter() - start
    from hest_spatialdata.napari import _spatialdata_view

    loader = _spatialdata_view._LOADS.get(viewer)
    arrivals: dict[str, float] = {}
    while time.perf_counter() - start < 600:
        app.processEvents()
        for layer in viewer.layers:
            arrivals.setdefault(layer.name, time.perf_counter() - start)
        if loader is None or loader.done:
            break
        time.sleep(0.005)
    viewer.reset_view()
    viewer.screenshot(canvas_only=True, flash=False)  # the first frame with every layer drawn
    drawn = time.perf_counter() - start
    result = {
        "viewer": viewer_ready,
        "open_returned": returned,
        "layers": arrivals,
        "drawn": drawn,
        "backend": str(get_settings().experimental.triangulation_backend),
        "rss_after": _harness.current_rss(),
    }
    viewer.close()
    return result


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _command(*args: Any) -> list[str]:
    command = [sys.executable, __file__, *(str(a) for a in args)]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {WINDOW[0] + 200}x{WINDOW[1] + 200}x24", *command]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", nargs="+", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument("--triangulation", nargs="*", default=[], help="also open with these napari backends")
    parser.add_argument("--no-convert", action="store_true", help="reuse the stores of an earlier run")
    args = parser.parse_args()
    print(_harness.machine_text())
    for key in args.samples:
        subprocess.run([sys.executable, __file__, "--build", key], check=True)
    conversions, opens = [], []
    for key in args.samples:
        sample_id = SAMPLES[key][0]
        for labels in (False, True):
            store = WORK / f"stores_v{INPUT_VERSION}_{'labels' if labels else 'nolabels'}" / f"{sample_id}.zarr"
            if not (args.no_convert and store.exists()):
                run = _harness.run_script(__file__, "--child-convert", key, int(labels))
                res = run.result
                conversions.append([
                    key, "yes" if labels else "no", f"{res['seconds']:.1f}", f"{_harness.mib(run.peak_rss or 0):.0f}",
                    f"{_harness.mib(res['store_bytes']):.1f}", f"{_harness.mib(res['labels_bytes']):.1f}",
                    run.load_text,
                ])  # fmt: skip
        variants = [("labels", "bermuda"), ("nolabels", "bermuda")] if key != "example" else [("labels", "bermuda")]
        variants += [("labels", backend) for backend in args.triangulation if key == "3k"]
        for stores, backend in variants:
            store = WORK / f"stores_v{INPUT_VERSION}_{stores}" / f"{sample_id}.zarr"
            run = _harness.run_child(_command("--child-open", store, backend))
            res = run.result
            layers = ", ".join(f"{name} {t:.1f}" for name, t in res["layers"].items())
            opens.append([
                key, stores, res["backend"], f"{res['viewer']:.1f}", f"{res['open_returned']:.1f}", layers,
                f"{res['drawn']:.1f}",
                f"{_harness.mib(run.peak_rss or 0):.0f}", run.load_text,
            ])  # fmt: skip
    if conversions:
        _harness.print_table(
            ["sample", "nuclei_labels", "convert s", "peak RSS MiB", "store MiB", "labels MiB", "load"], conversions
        )
    _harness.print_table(
        ["sample", "store", "triangulation", "napari up s", "open() s", "layer in viewer at (s)", "drawn s",
         "peak MiB", "load"],
        opens,
        note="napari up: napari imported and a 1280 x 900 window shown, from the start of the process. The other "
        "times count from the call to viewer.open(), imports of spatialdata and napari-spatialdata included (a "
        "first open in a napari session); store: with nuclei_labels, or without (rasterised on the fly).",
    )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1:2] == ["--build"]:
        build(sys.argv[2])
    elif sys.argv[1:2] == ["--child-convert"]:
        _harness.emit(child_convert(sys.argv[2], sys.argv[3] == "1"))
    elif sys.argv[1:2] == ["--child-open"]:
        _harness.emit(child_open(Path(sys.argv[2]), sys.argv[3]))
    else:
        main()
