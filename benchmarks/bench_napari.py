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
from collections.abc import Callable
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
#: Seconds the viewer is left idle before each open (napari started, then the user opens a store).
SETTLE_S = 2.0
#: The elements of our default layers, as napari-spatialdata's ``Interactive`` adds them (its own layers).
INTERACTIVE_ELEMENTS = ("he", "tissue", "spots", "nuclei_labels", "transcripts")


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


def child_open(stores: list[Path], opener: str, triangulation: str) -> dict[str, Any]:
    """Open ``stores`` one after the other in one running viewer (napari's event loop), as a user does.

    The viewer is started and left idle for :data:`SETTLE_S` (a user reaching for File > Open), then each store is
    opened with ``opener`` and timed from that call until the canvas has drawn a frame after the last default layer
    was added: the H&E, the outlines and the spots all on screen.
    """
    import napari
    from napari.settings import get_settings
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import hest_spatialdata.napari._layers as layers_module

    get_settings().experimental.triangulation_backend = triangulation  # the same for both openers
    layers_module.use_compiled_triangulation = lambda: triangulation  # keep it: our reader would select bermuda
    process_start = time.perf_counter()
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(*WINDOW)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas  # the vispy canvas: its draw event is a real frame
    draws: list[float] = []
    canvas.events.draw.connect(lambda _event: draws.append(time.perf_counter()))
    results: list[dict[str, Any]] = []
    pending = list(stores)

    def open_next() -> None:
        if not pending:
            try:
                viewer.close()
                napari.Viewer.close_all()
            finally:  # a close that raised (napari's hook prints it) must not leave the event loop running forever
                QApplication.instance().quit()
            return
        store = pending.pop(0)
        run: dict[str, Any] = {"store": store.name, "layers": {}, "load_before": _harness.load1()}
        inserted = run["layers"]
        start, cpu = time.perf_counter(), time.process_time()

        def on_inserted(event: Any) -> None:
            inserted.setdefault(event.value.name, time.perf_counter() - start)

        viewer.layers.events.inserted.connect(on_inserted)
        done = _open_plugin(viewer, store) if opener == "plugin" else _open_interactive(viewer, store)
        run["open_returned"] = time.perf_counter() - start

        def wait_loaded() -> None:
            if not done():
                QTimer.singleShot(5, wait_loaded)
                return
            run["added"] = time.perf_counter() - start
            first_frame = len(draws)
            viewer.reset_view()
            canvas.update()

            def wait_drawn() -> None:
                if len(draws) == first_frame:
                    QTimer.singleShot(5, wait_drawn)
                    return
                run["drawn"] = draws[first_frame] - start
                run["cpu_seconds"] = time.process_time() - cpu  # every thread's: steadier than wall under load
                run["rss_after"] = _harness.current_rss()
                run["load_after"] = _harness.load1()
                viewer.layers.events.inserted.disconnect(on_inserted)
                results.append(run)
                QTimer.singleShot(int(SETTLE_S * 1000), open_next)

            wait_drawn()

        QTimer.singleShot(0, wait_loaded)

    viewer_ready: list[float] = []
    QTimer.singleShot(0, lambda: viewer_ready.append(time.perf_counter() - process_start))
    QTimer.singleShot(int(SETTLE_S * 1000), open_next)
    napari.run()
    if len(viewer.layers):  # viewer.close() removes every layer first
        raise RuntimeError(f"viewer.close() failed (see above), layers left: {[layer.name for layer in viewer.layers]}")
    return {"viewer": viewer_ready[0], "opens": results, "backend": triangulation}


def _open_plugin(viewer: Any, store: Path) -> Callable[[], bool]:
    """``viewer.open(store, plugin="hest-spatialdata")``; whether its default layers are all in the viewer."""
    from hest_spatialdata.napari import _spatialdata_view

    viewer.open(store, plugin="hest-spatialdata")
    loader = _spatialdata_view._LOADS.get(viewer)
    return lambda: loader is None or loader.done


def _open_interactive(viewer: Any, store: Path) -> Callable[[], bool]:
    """napari-spatialdata's own ``Interactive`` on the store, adding the elements of our default layers one by one.

    ``Interactive.add_element`` loads in napari-spatialdata's thread and drops a request while one runs, so each
    element is asked for once the previous one is in the viewer.
    """
    from napari_spatialdata import Interactive
    from spatialdata import read_zarr

    sdata = read_zarr(store)
    interactive = Interactive(sdata, headless=True)
    names = {name for _, name, _ in sdata.gen_spatial_elements()}
    wanted = [name for name in INTERACTIVE_ELEMENTS if name in names]
    queue, before = list(wanted), len(viewer.layers)
    loading = interactive._sdata_widget.worker_thread

    def done() -> bool:
        added = len(viewer.layers) - before
        if queue and not loading.isRunning() and added == len(wanted) - len(queue):
            interactive.add_element(queue.pop(0), "global")
        return not queue and added == len(wanted)

    return done


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
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the plugin / Interactive comparison")
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
            run = _harness.run_child(_command("--child-open", "plugin", backend, _store(key, stores)))
            res = run.result
            opens.append([key, stores, res["backend"], f"{res['viewer']:.1f}", *_open_cells(res["opens"][0]),
                          f"{_harness.mib(run.peak_rss or 0):.0f}", run.load_text])  # fmt: skip
    if conversions:
        _harness.print_table(
            ["sample", "nuclei_labels", "convert s", "peak RSS MiB", "store MiB", "labels MiB", "load"], conversions
        )
    _harness.print_table(
        ["sample", "store", "triangulation", "napari up s", "open() s", "layer in viewer at (s)", "drawn s",
         "peak MiB", "load"],
        opens,
        note="Each row a fresh process: napari started (napari up: from the start of the process), left idle "
        f"{SETTLE_S:.0f} s, then the store opened in the running viewer with viewer.open(store, "
        'plugin="hest-spatialdata"). Times count from that call (imports of spatialdata and napari-spatialdata '
        "included: a first open); drawn: the first canvas frame after the last default layer was added. store: with "
        "nuclei_labels, or without (rasterised on the fly).",
    )  # fmt: skip
    compare(args.samples, args.repeat)


def compare(samples: list[str], repeat: int) -> None:
    """Our first open against napari-spatialdata's ``Interactive`` on the same store, and a second open after it.

    Each in a fresh process, alternating (``repeat`` rounds): the plugin opens the first sample, then the second
    (when given) in the same viewer; ``Interactive`` opens the first sample with the same elements.
    """
    first, *rest = [key for key in samples if key != "example"] or samples
    plugin_stores = [_store(first, "labels"), *([_store(rest[0], "labels")] if rest else [])]
    rows = []
    for _, opener in _harness.rounds(["plugin", "interactive"], repeat):
        stores = plugin_stores if opener == "plugin" else plugin_stores[:1]
        run = _harness.run_child(_command("--child-open", opener, "bermuda", *stores))
        for i, res in enumerate(run.result["opens"]):
            key = first if i == 0 else rest[0]
            which = "first" if i == 0 else f"second (after {first})"
            rows.append(
                [opener, key, which, *_open_cells(res), _harness.load_text(res["load_before"], res["load_after"])]
            )
    _harness.print_table(
        ["opener", "sample", "open", "open() s", "layer in viewer at (s)", "drawn s", "load"],
        rows,
        note='plugin: viewer.open(store, plugin="hest-spatialdata"); interactive: napari_spatialdata.Interactive('
        f"read_zarr(store)) then add_element of {', '.join(INTERACTIVE_ELEMENTS)} (those in the store), each once the "
        "previous is in the viewer. Each a fresh process with a running viewer; times from the call; drawn: the first "
        "canvas frame after the last layer was added. Goal: the first open <= 6 s and no slower than interactive.",
    )  # fmt: skip


def _store(key: str, stores: str) -> Path:
    return WORK / f"stores_v{INPUT_VERSION}_{stores}" / f"{SAMPLES[key][0]}.zarr"


def _open_cells(res: dict[str, Any]) -> list[str]:
    layers = ", ".join(f"{name} {t:.1f}" for name, t in res["layers"].items())
    return [f"{res['open_returned']:.1f}", layers, f"{res['drawn']:.1f}"]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1:2] == ["--build"]:
        build(sys.argv[2])
    elif sys.argv[1:2] == ["--child-convert"]:
        _harness.emit(child_convert(sys.argv[2], sys.argv[3] == "1"))
    elif sys.argv[1:2] == ["--child-open"]:
        _harness.emit(child_open([Path(p) for p in sys.argv[4:]], sys.argv[2], sys.argv[3]))
    else:
        main()
