"""Benchmark: reading a HEST slide remotely (``hf://``, by byte ranges) next to reading the same file locally.

A HEST-style slide (``bench_wsi.ensure_slide``: libvips pyramidal TIFF, 256-px LZW tiles, real H&E texture with
sensor noise, about half glass; 12,288 px by default, ~240 MB like HEST's 12k-px slides) is served by the loopback
hub of the tests (``tests/hub_server.py``: the hub's API, ``Range`` requests, bytes sent counted per file). For each
operation this prints the wall time and the bytes moved, locally (``read_chars`` of the process: bytes read from
files) and remotely (bytes the server sent, and its requests):

- ``open``: ``read_hest(root, id, elements=["he"])`` (the TIFF header and tile tables only);
- ``coarsest``: open + compute the coarsest level;
- ``window``: open + compute a 768 x 768 level-0 window near the slide's centre (not aligned to tiles nor chunks,
  as a viewer's), with the compressed bytes of the tiles it covers and the ratio of the bytes fetched to them
  (goal: <= 2x);
- ``convert``: ``convert_sample(root, id, out, elements=["he"])`` (every level into a Zarr store), with the
  largest size the huggingface_hub cache and the temporary folder reached, and the requests of reading the levels
  by 2048-px blocks (one per row of tiles of a block, or one per block spanning a level's width; the header's
  few requests come on top).

Each operation runs in a fresh subprocess (``_harness.run_child``); the 1-minute load is printed beside it.

Usage::

    python benchmarks/bench_remote.py                 # 12,288 px
    python benchmarks/bench_remote.py --size 4096     # a quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _harness

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.hub_server
HF_ROOT = "hf://datasets/MahmoodLab/hest"
OPERATIONS = ("open", "coarsest", "window", "convert")
WINDOW = 768
#: The ratio of a window's fetched bytes to its tiles' that issue 14 allows.
WINDOW_GOAL = 2.0
BLOCK = 2048


def child(operation: str, root: str, sample_id: str, out: str) -> None:
    """Run one operation in this (fresh) process and emit its wall time and the bytes it read from files."""
    import psutil

    from hest_spatialdata.readers.sample import read_hest
    from hest_spatialdata.storage.store import convert_sample

    io_before = psutil.Process().io_counters().read_chars
    start = time.perf_counter()
    if operation == "convert":
        convert_sample(root, sample_id, out, elements=["he"], overwrite=True)
    else:
        image = read_hest(root, sample_id, elements=["he"])["he"]
        if operation == "coarsest":
            image[f"scale{len(image) - 1}"]["image"].values  # noqa: B018 - computing is the point
        elif operation == "window":
            level0 = image["scale0"]["image"]
            y0, x0 = window_origin(level0.shape[1:])
            level0[:, y0 : y0 + WINDOW, x0 : x0 + WINDOW].values  # noqa: B018
    seconds = time.perf_counter() - start
    _harness.emit({"seconds": seconds, "read_chars": psutil.Process().io_counters().read_chars - io_before})


def window_origin(shape: tuple[int, ...]) -> tuple[int, int]:
    """Top-left pixel of the window: near the centre, off the tile and chunk grids."""
    return shape[0] // 2 - WINDOW // 2 + 100, shape[1] // 2 - WINDOW // 2 + 100


def window_tile_bytes(tif: Path) -> int:
    """Compressed bytes of the level-0 tiles under the window."""
    import tifffile

    with tifffile.TiffFile(tif) as t:
        page = t.pages[0]
        th, tw = page.chunks[:2]
        y0, x0 = window_origin(page.shape)
        across = page.chunked[1]
        rows = range(y0 // th, -(-(y0 + WINDOW) // th))
        cols = range(x0 // tw, -(-(x0 + WINDOW) // tw))
        return sum(page.databytecounts[r * across + c] for r in rows for c in cols)


def block_requests(tif: Path) -> int:
    """Requests of reading every level by 2048-px blocks: a row of tiles each, or the block if it spans the level."""
    import tifffile

    with tifffile.TiffFile(tif) as t:
        shapes = [(level.shape[0], level.shape[1], level.keyframe.chunks[0]) for level in t.series[0].levels]
    return sum(
        -(-height // BLOCK) if width <= BLOCK else -(-height // tile) * -(-width // BLOCK)
        for height, width, tile in shapes
    )


def disk_bytes(*folders: Path) -> int:
    """Total size of the files under some folders (links not counted: the hub cache's snapshots link its blobs)."""
    files = (p for f in folders for p in f.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=12288, help="Slide side in pixels.")
    parser.add_argument("--child", nargs=4, metavar=("OP", "ROOT", "ID", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from bench_wsi import ensure_slide
    from tests.hub_server import FakeHub

    (HERE / "_work").mkdir(exist_ok=True)
    root, sample_id, tif = ensure_slide(args.size)
    size = tif.stat().st_size
    print(_harness.machine_text())
    print(f"slide: {tif.name}, {args.size} x {args.size} px, {size / 1e6:.1f} MB")
    tiles, blocks = window_tile_bytes(tif), block_requests(tif)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as scratch, FakeHub(root) as hub:
        scratch = Path(scratch)
        cache, tmp = scratch / "hf_cache", scratch / "tmp"
        tmp.mkdir()
        env = os.environ | {
            "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_bench", "HF_HUB_CACHE": str(cache), "TMPDIR": str(tmp),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }  # fmt: skip
        for operation in OPERATIONS:
            for where, source in (("local", str(root)), ("remote", HF_ROOT)):
                out = scratch / f"out_{where}"
                hub.reset_log()
                with _harness.PeakSampler(lambda: disk_bytes(cache, tmp), interval=0.2) as disk:
                    run = _harness.run_child(
                        [sys.executable, __file__, "--child", operation, source, sample_id, str(out)], env=env
                    )
                result = run.result
                moved = result["read_chars"] if where == "local" else hub.sent()
                requests = "" if where == "local" else str(hub.file_requests())
                note = ""
                if operation == "window":
                    note = f"window tiles {tiles / 1e6:.2f} MB; moved / tiles {moved / tiles:.2f}x"
                    note += f" (goal <= {WINDOW_GOAL:.0f}x)" if where == "remote" else ""
                if operation == "convert" and where == "remote":
                    note = f"HF cache + temp peak {disk.peak / 1e6:.2f} MB; 2048-px block requests {blocks} + header"
                rows.append(
                    [
                        operation, where, f"{result['seconds']:.2f}", f"{moved / 1e6:.2f}",
                        f"{100 * moved / size:.2f} %", requests, note, run.load_text,
                    ]
                )  # fmt: skip
                shutil.rmtree(out, ignore_errors=True)
    _harness.print_table(
        ["operation", "where", "seconds", "MB moved", "of slide", "requests", "note", "load 1 min"],
        rows,
        note="MB moved: local = bytes read from files by the process (read_chars, the slide and Python's own files); "
        "remote = bytes of file content the loopback hub sent.",
    )


if __name__ == "__main__":
    main()
