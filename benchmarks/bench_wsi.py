"""Benchmark: a HEST slide's conversion (TIFF pyramid -> SpatialData Zarr) against the plain loop and naive spatialdata.

For synthetic HEST-style slides (libvips pyramidal tiled TIFF, 256-px tiles, LZW with predictor, RGB uint8; real H&E
texture rotated/mirrored at random, ~half glass background, gaussian sensor noise sigma 1.5) this measures, per size,
each as a whole process (interpreter start and imports included):

- ``baseline``: the plain loop, the limit: every tile of every TIFF level decoded with tifffile, each chunk
  ``(c, y, x)`` of the converter's layout compressed with the converter's codec (zstd level 1, numcodecs) and
  written as the file zarr would write, over a pool of ``--threads`` threads and no framework.
- ``converter``: ``hest_spatialdata.storage.store.convert_sample(..., elements=["he"])`` on a HEST root holding
  the slide, as the CLI runs it (same threads: one per core).
- ``naive``: what a spatialdata user would write: level 0 through tifffile's zarr store,
  ``Image2DModel.parse(level0, scale_factors=[2, ...], chunks=...)`` and ``SpatialData.write`` (same codec).

It prints every run, a table per size, then each figure of issue 14 beside its limit, as ratios of medians measured in
the same run: converter / loop (<= 1.25x), naive / converter (>= 2.3x), the converter's peak RSS (<= 1.5 GiB), with
the 1-minute load average. Runs of the three kinds alternate so that load from other users hits all alike; on a
loaded machine compare the CPU ratios. Slides are built once (pyvips; about 2 min for 16k, 4 min for 32k) and cached
in ``benchmarks/_work/`` (git-ignored).

Usage::

    python benchmarks/bench_wsi.py                        # 16k slide, 3 runs of each (a few minutes)
    python benchmarks/bench_wsi.py --sizes 32768          # the issue's 32k slide (about 4x longer)
    python benchmarks/bench_wsi.py --sizes 16384 --repeat 1 --only baseline converter
    python benchmarks/bench_wsi.py --sizes 16384 --chunk-size 512 --compressor lz4:5
    python benchmarks/bench_wsi.py --sizes 16384 --verify   # also check the store's pixels against the TIFF

``--compressor`` sets the codec of the converter and of the naive run: ``default`` (``store.DEFAULT_RASTER_COMPRESSOR``,
zstd 1), ``none`` (zarr's default), ``zstd:LEVEL`` or ``lz4:LEVEL`` (spatialdata's ``raster_compressor``). The loop
uses the same codec unless ``--baseline-compressor`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
PIXEL_SIZE_UM = 0.5
#: Where each mode writes (the converter: ``{id}.zarr`` in the output folder).
STORES = {"baseline": "baseline.zarr", "naive": "naive.zarr"}
MODES = ("baseline", "converter", "naive")
#: The limits of issue 14, checked in the same run: converter <= 1.25x the loop, naive >= 2.3x the converter.
MAX_CONVERTER_OVER_LOOP = 1.25
MIN_NAIVE_OVER_CONVERTER = 2.3
MAX_PEAK_RSS_GIB = 1.5
#: Bump when the synthetic slide changes, so cached slides are rebuilt.
SLIDE_VERSION = 1


# --------------------------------------------------------------------------------------------- slides


def slide_path(size: int) -> tuple[Path, str]:
    """``(HEST root, sample id)`` of the cached slide of ``size`` x ``size`` px."""
    sample_id = f"BENCH{size}V{SLIDE_VERSION}"
    return WORK / f"hest_{size}", sample_id


def ensure_slide(size: int) -> tuple[Path, str, Path]:
    """Build (once) a HEST root with a ``size`` x ``size`` HEST-style slide and its metadata JSON."""
    root, sample_id = slide_path(size)
    tif = root / "wsis" / f"{sample_id}.tif"
    meta = root / "metadata" / f"{sample_id}.json"
    if tif.is_file() and meta.is_file():
        return root, sample_id, tif
    from hest_spatialdata.example import hest_metadata_template, write_metadata, write_slide

    need = 3 * size * size * 2  # the TIFF (~0.8x raw) and one store at a time, with room to spare
    free = shutil.disk_usage(WORK).free
    if free < need:
        raise SystemExit(f"not enough free disk in {WORK}: {free / 2**30:.1f} GiB free, ~{need / 2**30:.1f} GiB needed")
    print(f"building {tif} ({size} x {size}) ...", flush=True)
    t0 = time.perf_counter()
    partial = tif.with_suffix(".tif.partial")
    write_slide(partial, synthetic_slide(size), PIXEL_SIZE_UM, writer="pyvips")
    partial.rename(tif)
    metadata = hest_metadata_template()
    metadata.update(
        id=sample_id, image_filename=tif.name, st_technology="Visium", pixel_size_um_estimated=PIXEL_SIZE_UM,
        fullres_px_height=size, fullres_px_width=size, fullres_height=size, fullres_width=size,
    )  # fmt: skip
    write_metadata(meta, metadata)
    print(f"  built in {time.perf_counter() - t0:.0f} s, {tif.stat().st_size / 2**30:.2f} GiB", flush=True)
    return root, sample_id, tif


def synthetic_slide(size: int, seed: int = 0) -> Any:
    """A lazy pyvips image: the real H&E tile rotated/mirrored at random, ~half glass, gaussian noise (sigma 1.5).

    The noise keeps zstd (and LZW) from exploiting exact repeats of the tile, as sensor noise does on real scans.
    """
    import numpy as np
    import pyvips

    from hest_spatialdata.example import he_tile

    rng = np.random.default_rng(seed)
    tile = he_tile()
    base = pyvips.Image.new_from_array(tile).copy(interpretation="srgb")
    variants = []
    for b in (base, base.flipver()):
        variants += [b, b.rot90(), b.rot180(), b.rot270()]
    n = math.ceil(size / tile.shape[0])
    texture = pyvips.Image.arrayjoin([variants[int(k)] for k in rng.integers(8, size=n * n)], across=n)
    texture = texture.crop(0, 0, size, size)
    # tissue: a wobbly ellipse covering about half of the slide, the rest glass background
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    inside = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.36) ** 2 + 0.15 * np.sin(9 * xx) * np.cos(7 * yy) < 1
    mask = pyvips.Image.new_from_array((inside * 255).astype(np.uint8)).resize(size / 256, kernel="linear")
    image = (mask.crop(0, 0, size, size) > 127).ifthenelse(texture, [242, 240, 244])
    noise = [pyvips.Image.gaussnoise(size, size, sigma=1.5, mean=0, seed=seed * 3 + k + 1) for k in range(3)]
    image = (image.cast("float") + noise[0].bandjoin(noise[1:])).rint().cast("uchar")  # cast clips to 0..255
    return image.copy(interpretation="srgb")


# --------------------------------------------------------------------------------------------- codecs


def parse_compressor(text: str) -> dict[str, int] | None:
    """``none`` -> ``None``; ``zstd:5`` -> ``{"zstd": 5}`` (spatialdata's ``raster_compressor``)."""
    if text.lower() == "default":
        from hest_spatialdata.storage.store import DEFAULT_RASTER_COMPRESSOR

        return DEFAULT_RASTER_COMPRESSOR
    if text.lower() in ("none", ""):
        return None
    name, _, level = text.partition(":")
    if name not in ("zstd", "lz4") or not level.isdigit():
        raise argparse.ArgumentTypeError(f"compressor must be default, none, zstd:LEVEL or lz4:LEVEL, not {text!r}")
    return {name: int(level)}


def codec_text(raster_compressor: dict[str, int] | None) -> str:
    """The command-line spelling of a ``raster_compressor``."""
    if not raster_compressor:
        return "none"
    ((name, level),) = raster_compressor.items()
    return f"{name}:{level}"


def zarr_compressors(raster_compressor: dict[str, int] | None) -> Any:
    """The zarr v3 ``compressors=`` matching what spatialdata writes for ``raster_compressor``."""
    if not raster_compressor:
        return "auto"  # zarr's default: zstd level 0
    from spatialdata._io.io_raster import _build_v3_codec

    ((name, level),) = raster_compressor.items()
    return [_build_v3_codec(name, level)]


# --------------------------------------------------------------------------------------------- measured runs


def run_baseline(
    tif_path: Path, out: Path, chunk: int, raster_compressor: dict[str, int] | None, pool: ThreadPoolExecutor
) -> None:
    """Decode every tile of every level with tifffile and write it as zarr v3 chunks ``(c, y, x)``, no framework.

    One task per output chunk: read the chunk's tiles with ``os.pread`` (no file lock), decode them with the
    TIFF page's own decoder (LZW + predictor, imagecodecs, GIL released), transpose to ``(c, y, x)``, then with a
    zstd codec compress the chunk with numcodecs and write its file where zarr would (no zarr in the loop: the
    honest floor, since the converter writes such chunks itself too); with another codec, assign it to the zarr
    array.
    """
    import numpy as np
    import tifffile
    import zarr

    compressors = zarr_compressors(raster_compressor)
    zstd = None
    if raster_compressor and set(raster_compressor) == {"zstd"}:
        from numcodecs import Zstd

        zstd = Zstd(level=raster_compressor["zstd"])
    fd = os.open(tif_path, os.O_RDONLY)
    with tifffile.TiffFile(tif_path) as tif:
        root = zarr.open_group(out, mode="w", zarr_format=3)
        tasks = []
        for k, level in enumerate(tif.series[0].levels):
            page = level.keyframe
            h, w, c = level.shape
            array = root.create_array(
                f"s{k}", shape=(c, h, w), chunks=(c, chunk, chunk), dtype=np.uint8, compressors=compressors,
                dimension_names=("c", "y", "x"),
            )  # fmt: skip
            tasks += [(page, array, y, x) for y in range(0, h, chunk) for x in range(0, w, chunk)]

        def chunk_task(task: tuple) -> None:
            page, array, y0, x0 = task
            _, h, w = array.shape
            th, tw = page.tilelength, page.tilewidth
            across = -(-page.imagewidth // tw)
            y1, x1 = min(y0 + chunk, h), min(x0 + chunk, w)
            block = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
            for ty in range(y0 // th, -(-y1 // th)):
                for tx in range(x0 // tw, -(-x1 // tw)):
                    index = ty * across + tx
                    data = os.pread(fd, page.databytecounts[index], page.dataoffsets[index])
                    tile = page.decode(data, index)[0][0]
                    ys, xs = ty * th - y0, tx * tw - x0
                    hh, ww = min(th, y1 - y0 - ys), min(tw, x1 - x0 - xs)
                    block[ys : ys + hh, xs : xs + ww] = tile[:hh, :ww]
            if zstd is None:
                array[:, y0:y1, x0:x1] = block.transpose(2, 0, 1)
                return
            # no framework at all: the chunk's bytes (padded at the edge) compressed and written as the chunk's file
            full = np.zeros((3, chunk, chunk), np.uint8)
            full[:, : y1 - y0, : x1 - x0] = block.transpose(2, 0, 1)
            key = out / array.path / array.metadata.encode_chunk_key((0, y0 // chunk, x0 // chunk))
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(zstd.encode(full))

        for _ in pool.map(chunk_task, tasks):
            pass
    os.close(fd)


def run_converter(
    root: Path, sample_id: str, out_dir: Path, chunk: int, raster_compressor: dict[str, int] | None
) -> None:
    """The converter's image path, as the CLI runs it."""
    from hest_spatialdata.storage.store import convert_sample

    convert_sample(
        root, sample_id, out_dir, overwrite=True, elements=["he"], chunk_size=chunk, raster_compressor=raster_compressor
    )


def run_naive(tif_path: Path, out: Path, chunk: int, raster_compressor: dict[str, int] | None) -> None:
    """What a spatialdata user would write: level 0 through tifffile's zarr store, spatialdata builds the pyramid.

    ``Image2DModel.parse(level0, scale_factors=[2, ...], chunks=...)`` (as many levels as the TIFF) + ``write``.
    Its lower levels are spatialdata's own downsampling, not the TIFF's (so not pixel-identical).
    """
    import dask.array as da
    import spatialdata as sd
    import tifffile
    import zarr
    from spatialdata.models import Image2DModel

    with tifffile.TiffFile(tif_path) as tif:
        n_levels = len(tif.series[0].levels)
        level0 = da.from_zarr(zarr.open(tif.series[0].aszarr(level=0), mode="r"), chunks=(chunk, chunk, 3))
        image = Image2DModel.parse(
            level0, dims=("y", "x", "c"), scale_factors=[2] * (n_levels - 1), chunks=(3, chunk, chunk), rgb=None
        )
        sd.SpatialData(images={"he": image}).write(out, raster_compressor=raster_compressor)


def worker(args: argparse.Namespace) -> None:
    """Entry point of the measuring subprocess: one run, imports included, then one JSON line.

    ``cpu`` is the whole process's CPU (``process_time`` since it started: interpreter, imports and the run), to set
    beside the driver's whole-process wall time.
    """
    import psutil

    proc = psutil.Process()
    raster_compressor = parse_compressor(args.compressor)
    with _harness.RssSampler() as sampler:
        if args.mode == "baseline":
            import numpy  # noqa: F401  # the imports the loop needs, timed like the converter's
            import tifffile  # noqa: F401
            import zarr  # noqa: F401
        pool = ThreadPoolExecutor(args.threads)  # shut down after the per-thread CPU times are read
        threads0, machine0 = thread_cpu(proc), busy_cpu()
        with _harness.Stopwatch() as clock:
            if args.mode == "baseline":
                run_baseline(Path(args.tif), Path(args.out), args.chunk_size, raster_compressor, pool)
            elif args.mode == "naive":
                run_naive(Path(args.tif), Path(args.out), args.chunk_size, raster_compressor)
            else:
                run_converter(Path(args.root), args.sample_id, Path(args.out), args.chunk_size, raster_compressor)
        threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(proc).items()}
        others = max(0.0, busy_cpu() - machine0 - clock.cpu)  # CPU that other processes took meanwhile
    pool.shutdown()
    busiest = max(threads, key=threads.get)
    _harness.emit(
        {
            "run_wall": clock.wall,
            "cpu": time.process_time(),
            "sampled_peak": sampler.peak,
            "busiest_thread": busiest.rsplit(":", 1)[0],
            "busiest_cpu": threads[busiest],
            "others_share": others / (clock.wall * (os.cpu_count() or 1)),
        }
    )


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all processes) since boot."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def thread_cpu(proc: Any) -> dict[str, float]:
    """CPU seconds of every live thread of this process, keyed ``name:tid`` (Python threads named).

    With other users loading the machine, wall time is noisy; the CPU time of the busiest thread bounds from below
    what the run would take on an idle machine (a thread runs on one core at a time), as does total CPU / cores.
    """
    names = {t.native_id: t.name for t in threading.enumerate()}
    return {f"{names.get(t.id, 'native')}:{t.id}": t.user_time + t.system_time for t in proc.threads()}


def measure(mode: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh subprocess; the store is sized and deleted afterwards."""
    root, sample_id = slide_path(size)
    tif = root / "wsis" / f"{sample_id}.tif"
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run = _harness.run_script(
        __file__, "_worker", mode, "--chunk-size", args.chunk_size,
        "--compressor", args.baseline_compressor if mode == "baseline" else args.compressor,
        "--threads", args.threads, "--tif", tif, "--root", root, "--sample-id", sample_id,
        "--out", out / STORES.get(mode, ""),
    )  # fmt: skip
    result = run.result
    store = out / STORES.get(mode, f"{sample_id}.zarr")
    if args.verify and mode == "converter":
        verify_store(store, tif)
    result |= {
        "wall": run.wall,  # the whole process: interpreter start, imports, the run
        "maxrss": run.peak_rss,
        "store_bytes": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()),
        "tif_bytes": tif.stat().st_size,
        "load": run.load,
        "load_range": (run.load_before, run.load_after),
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def verify_store(store: Path, tif_path: Path) -> None:
    """Every level of the store's ``he`` image equals the TIFF level, compared band by band (bounded memory)."""
    import numpy as np
    import spatialdata as sd
    import tifffile
    import zarr

    sdata = sd.read_zarr(store)
    tree = sdata.images["he"]
    with tifffile.TiffFile(tif_path) as tif:
        group = zarr.open_group(tif.series[0].aszarr(multiscales=True), mode="r")
        levels = tif.series[0].levels
        if len(tree.children) != len(levels):
            raise SystemExit(f"verify: {len(tree.children)} scales in the store, {len(levels)} TIFF levels")
        for k in range(len(levels)):
            stored = tree[f"scale{k}"]["image"].data
            source = group[str(k)]
            if stored.shape != (3, *source.shape[:2]):
                raise SystemExit(f"verify: scale{k} shape {stored.shape} != TIFF {source.shape}")
            step = 2048
            for y in range(0, source.shape[0], step):
                a = np.asarray(stored[:, y : y + step].compute())
                b = source[y : y + step].transpose(2, 0, 1)
                if not np.array_equal(a, b):
                    raise SystemExit(f"verify: scale{k} differs from TIFF level {k} in rows {y}..{y + step}")
    print(f"  verify: {len(levels)} levels pixel-identical to the TIFF", flush=True)


# --------------------------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384], help="slide sides in px")
    parser.add_argument("--chunk-size", type=int, default=None, help="image chunk side (default: the converter's)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each kind per size")
    parser.add_argument("--compressor", default="default", help="converter codec: default | none | zstd:L | lz4:L")
    parser.add_argument(
        "--baseline-compressor", default="same",
        help="loop codec: same (as --compressor, the reference), none (zarr's default), zstd:LEVEL, lz4:LEVEL",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="loop thread pool size")
    parser.add_argument("--only", choices=MODES, nargs="+", help="measure only these")
    parser.add_argument("--verify", action="store_true", help="check the converted store's pixels against the TIFF")
    parser.add_argument("--json", type=Path, help="also write every raw measurement to this JSON file")
    args = parser.parse_args()
    args.compressor = codec_text(parse_compressor(args.compressor))
    if args.baseline_compressor == "same":
        args.baseline_compressor = args.compressor
    parse_compressor(args.baseline_compressor)
    if args.chunk_size is None:
        from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE

        args.chunk_size = DEFAULT_CHUNK_SIZE

    WORK.mkdir(parents=True, exist_ok=True)
    print(subprocess.run(["df", "-h", str(WORK)], capture_output=True, text=True).stdout.strip())
    print(
        f"cores: {os.cpu_count()}, threads: {args.threads}, chunk: {args.chunk_size}, converter/naive codec: "
        f"{args.compressor}, loop codec: {args.baseline_compressor}, repeat: {args.repeat}"
    )
    print(f"python {sys.version.split()[0]}, {_versions()}", flush=True)
    print(_harness.machine_text() + "\n", flush=True)
    modes = list(args.only or MODES)
    raw: dict[str, Any] = {}
    for size in args.sizes:
        ensure_slide(size)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for r, mode in _harness.rounds(modes, args.repeat):  # alternate the order: load hits all alike
            res = measure(mode, size, args)
            runs[mode].append(res)
            print(
                f"  {size:>6} {mode:<9} run {r + 1}: {res['wall']:6.1f} s wall, {res['cpu']:6.1f} s cpu "
                f"(busiest thread {res['busiest_thread']} {res['busiest_cpu']:.1f} s), "
                f"peak RSS {_harness.gib(res['maxrss']):.2f} GiB, "
                f"store/TIFF {res['store_bytes'] / res['tif_bytes']:.3f}, "
                f"load {_harness.load_text(*res['load_range'])}, others took {res['others_share']:.0%} of the cores",
                flush=True,
            )
        raw[str(size)] = runs
        print_table(size, runs)
        print_limits(size, runs)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


def print_table(size: int, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Markdown table of one size: min / median over the repeats of every mode."""
    header = [
        "size", "what", "wall s min / median (runs)", "CPU s min / median", "MPix/s", "peak RSS GiB", "store/TIFF",
        "TIFF GiB", "load 1-min", "others' CPU",
    ]  # fmt: skip
    table = []
    for mode, results in runs.items():
        wall = _harness.Stats.of(r["wall"] for r in results)
        others = [r.get("others_share", float("nan")) for r in results]
        r0 = results[0]
        table.append([
            f"{size // 1024}k", mode, wall.text(runs=True), _harness.Stats.of(r["cpu"] for r in results).text(),
            f"{size * size / 1e6 / wall.min:.0f}", f"{_harness.gib(max(r['maxrss'] for r in results)):.2f}",
            f"{r0['store_bytes'] / r0['tif_bytes']:.3f}", f"{_harness.gib(r0['tif_bytes']):.2f}",
            _harness.load_range_text(r["load"] for r in results), f"{min(others):.0%}-{max(others):.0%}",
        ])  # fmt: skip
    _harness.print_table(
        header,
        table,
        note="Wall and CPU: the whole process (interpreter, imports, run). MPix/s: level-0 pixels / min wall. Peak "
        "RSS: ru_maxrss of the measuring process. Others' CPU: share of the cores other processes used (the noise).",
    )


def print_limits(size: int, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Each figure of issue 14 beside its limit, as ratios of medians measured in this run."""
    med = {m: (_harness.Stats.of(r["wall"] for r in rs).median, _harness.Stats.of(r["cpu"] for r in rs).median)
           for m, rs in runs.items()}  # fmt: skip
    load = _harness.load_range_text(r["load"] for rs in runs.values() for r in rs)
    print(f"\n{size // 1024}k limits (medians of this run, load {load}):")
    if {"converter", "baseline"} <= set(med):
        (cw, cc), (bw, bc) = med["converter"], med["baseline"]
        ok = "ok" if cw / bw <= MAX_CONVERTER_OVER_LOOP else "OVER"
        print(
            f"  converter / plain loop: {cw / bw:.2f}x wall, {cc / bc:.2f}x CPU "
            f"(limit <= {MAX_CONVERTER_OVER_LOOP}x) {ok}"
        )
    if {"converter", "naive"} <= set(med):
        (cw, cc), (nw, nc) = med["converter"], med["naive"]
        ok = "ok" if nw / cw >= MIN_NAIVE_OVER_CONVERTER else "UNDER"
        print(
            f"  naive / converter: {nw / cw:.2f}x wall, {nc / cc:.2f}x CPU (limit >= {MIN_NAIVE_OVER_CONVERTER}x) {ok}"
        )
    if "converter" in runs:
        peak = _harness.gib(max(r["maxrss"] for r in runs["converter"]))
        print(
            f"  converter peak RSS: {peak:.2f} GiB (limit <= {MAX_PEAK_RSS_GIB} GiB) {'ok' if peak <= 1.5 else 'OVER'}"
        )
    print(flush=True)


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(
        f"{p} {version(p)}" for p in ("spatialdata", "zarr", "dask", "tifffile", "imagecodecs", "ome-zarr")
    )


def _worker_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--compressor", default="none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tif")
    parser.add_argument("--root")
    parser.add_argument("--sample-id")
    parser.add_argument("--out", required=True)
    worker(parser.parse_args(sys.argv[2:]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        _worker_main()
    else:
        main()
