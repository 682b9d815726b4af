"""Benchmark: the image writer's hand-written chunk files against zarr-python's own write paths, in one run.

The converter writes a slide's pyramid with :func:`hest_spatialdata.writer.image.start_image_write`, which encodes
and writes each chunk as a file itself (``ChunkFiles``) because zarr-python's per-chunk write cost ~4 ms of its
event loop. This measures, on the same cached synthetic slide as ``bench_wsi.py`` (HEST-style pyramidal TIFF), the
same writer (same thread pool of ``--threads`` threads, same blocks, same codec: plain zstd at the converter's
level) with each way of writing the chunks:

- ``chunkfiles``: today's writer (``ChunkFiles``);
- ``zarr-fused``: ``ChunkFiles`` off, ``array[...] = block`` through zarr's ``FusedCodecPipeline``
  (``codec_pipeline.path = zarr.core.codec_pipeline.FusedCodecPipeline``: codecs run synchronously, local writes
  synchronous, one hop off the event loop per write);
- ``zarrs``: ``ChunkFiles`` off, through the Rust codec pipeline of the ``zarrs`` package
  (``codec_pipeline.path = zarrs.ZarrsCodecPipeline``);
- ``zarr-batched`` (only with ``--with-batched``): ``ChunkFiles`` off, zarr's default ``BatchedCodecPipeline``: the
  path ``ChunkFiles`` replaced, for reference.

Each run is a fresh process (imports paid before the clock starts) writing the slide's ``he`` image group into an
empty local store; runs alternate so that load hits all writers alike. The first store of each writer is kept until
the end and every file of it (each chunk file and each ``zarr.json``) is compared byte for byte with
``chunkfiles``' store. It prints each run, then per writer the write's wall and CPU seconds (min / median), their
ratios to ``chunkfiles`` (medians of the same run), whether the store is byte-identical, with the 1-minute load.

Usage::

    python benchmarks/bench_zarr_writers.py --size 8192 --repeat 2       # a smoke run (about a minute)
    python benchmarks/bench_zarr_writers.py --size 32768 --repeat 3      # the figure to decide on (quiet machine)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import _harness
from bench_wsi import WORK, ensure_slide, slide_path

#: Writer -> zarr's ``codec_pipeline.path`` (``None``: today's ``ChunkFiles``).
PIPELINES: dict[str, str | None] = {
    "chunkfiles": None,
    "zarr-fused": "zarr.core.codec_pipeline.FusedCodecPipeline",
    "zarrs": "zarrs.ZarrsCodecPipeline",
    "zarr-batched": "zarr.core.codec_pipeline.BatchedCodecPipeline",
}
REFERENCE = "chunkfiles"


# --------------------------------------------------------------------------------------------- child process


def child(writer: str, tif: Path, out: Path, threads: int) -> dict[str, Any]:
    """Write the slide's pyramid into ``out`` with ``writer``, in this (fresh) process."""
    import zarr

    from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE, open_levels
    from hest_spatialdata.storage.store import DEFAULT_RASTER_COMPRESSOR
    from hest_spatialdata.writer import image

    pipeline = PIPELINES[writer]
    if pipeline is not None:
        if writer == "zarrs":
            import zarrs  # noqa: F401  # registers its pipeline; imported before the clock starts
        image.ChunkFiles.of = classmethod(lambda cls, array: None)  # every chunk through zarr's own write path
        zarr.config.set({"codec_pipeline.path": pipeline})  # read when an array is created: before, here
    levels = open_levels(tif)
    group = zarr.open_group(zarr.storage.LocalStore(out), mode="w").require_group("images").create_group("he")
    with _harness.Stopwatch() as clock:
        image.start_image_write(
            group,
            levels,
            chunk_size=DEFAULT_CHUNK_SIZE,
            raster_compressor=DEFAULT_RASTER_COMPRESSOR,
            threads=threads,
        ).result()
    return {"write_s": clock.wall, "write_cpu_s": clock.cpu, "pipeline": str(pipeline), "zarr": zarr.__version__}


# --------------------------------------------------------------------------------------------- driver


def identical(reference: Path, other: Path) -> tuple[bool, str]:
    """Whether the two stores hold the same files with the same bytes; if not, whether the chunks decode the same.

    Chunk files are single zstd frames of the chunk's raw bytes (the layout ``ChunkFiles`` writes), so a chunk whose
    bytes differ (another zstd build, frame flags) is decoded with numcodecs and compared as pixels.
    """
    from numcodecs import Zstd

    names = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()}
    others = {p.relative_to(other) for p in other.rglob("*") if p.is_file()}
    if names != others:
        diff = sorted(names ^ others)
        return False, f"{len(diff)} files in one store only, e.g. {diff[0]}"
    differ = [n for n in sorted(names) if not filecmp.cmp(reference / n, other / n, shallow=False)]
    if not differ:
        return True, f"{len(names)} files equal"
    metadata = [n for n in differ if n.name == "zarr.json"]
    chunks = [n for n in differ if n.name != "zarr.json"]
    codec = Zstd()
    same_pixels = sum(
        codec.decode((reference / n).read_bytes()) == codec.decode((other / n).read_bytes()) for n in chunks
    )
    return False, (
        f"{len(differ)} of {len(names)} files differ ({len(metadata)} zarr.json, e.g. {differ[0]}); "
        f"{same_pixels} of the {len(chunks)} differing chunks decode to the same pixels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192, help="slide side in px (bench_wsi's cached slides)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each writer")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="writer threads (default: cores)")
    parser.add_argument("--with-batched", action="store_true", help="also zarr's default pipeline (slow)")
    args = parser.parse_args()
    writers = [w for w in PIPELINES if w != "zarr-batched" or args.with_batched]
    WORK.mkdir(exist_ok=True)
    _, _, tif = ensure_slide(args.size)
    out = WORK / f"zarr_writers_{args.size}"
    shutil.rmtree(out, ignore_errors=True)
    print(f"{_harness.machine_text()}; slide {slide_path(args.size)[1]} ({args.size} px), threads {args.threads}")
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in writers}
    kept: dict[str, Path] = {}
    for r, writer in _harness.rounds(writers, args.repeat):
        store = out / f"{writer}-{r}.zarr"
        run = _harness.run_script(__file__, "--child", writer, tif, store, args.threads)
        result = run.result | {"load": run.load, "load_text": run.load_text, "process_wall_s": run.wall}
        runs[writer].append(result)
        print(f"  {writer:13s} run {r}: write {result['write_s']:.2f} s, CPU {result['write_cpu_s']:.2f} s, "
              f"load {run.load_text}", flush=True)  # fmt: skip
        if writer in kept:
            shutil.rmtree(store)
        else:
            kept[writer] = store
    print_table(runs, {w: identical(kept[REFERENCE], kept[w]) for w in writers})
    shutil.rmtree(out, ignore_errors=True)


def print_table(runs: dict[str, list[dict[str, Any]]], same: dict[str, tuple[bool, str]]) -> None:
    reference_wall = _harness.Stats.of(r["write_s"] for r in runs[REFERENCE]).median
    reference_cpu = _harness.Stats.of(r["write_cpu_s"] for r in runs[REFERENCE]).median
    header = ["writer", "write s (min / med)", "CPU s (min / med)", "wall / chunkfiles", "CPU / chunkfiles",
              "byte-identical", "load 1-min"]  # fmt: skip
    rows = []
    for writer, results in runs.items():
        wall = _harness.Stats.of(r["write_s"] for r in results)
        cpu = _harness.Stats.of(r["write_cpu_s"] for r in results)
        ok, detail = same[writer]
        rows.append([writer, wall.text("{:.2f}"), cpu.text("{:.2f}"), f"{wall.median / reference_wall:.2f}x",
                     f"{cpu.median / reference_cpu:.2f}x", f"{'yes' if ok else 'NO'} ({detail})",
                     _harness.load_range_text(r["load"] for r in results)])  # fmt: skip
    _harness.print_table(header, rows, note="ratios: medians of this run; CPU: the writing process, all threads")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])))
    else:
        main()
