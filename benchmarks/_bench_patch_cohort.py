"""``bench_patches.py --cohort``: the cohort patch dataset on 0.27 µm/px stores against HEST's h5 (see there)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _harness
from _patch_sample import INPUT_VERSION, SAMPLE_ID, WORK, ensure_sample, sample_dir

BATCH = 64
FIDELITY_LIMITS = {"median": 1.0, "p95": 15.0}
GOALS = {"first epoch /s": 2500, "second epoch /s": 5000, "open 3 stores s": 1.5, "fresh first items s": 2.0}
#: What a new user's first script does (issue 21): open the cohort, build the patch dataset (HEST's gene rule on
#: the spot tables), read the first item of each store. Timestamps after the package's import, the dataset, the items.
FRESH_PROCESS = """
import json, sys, time
import hest_spatialdata as hs
imported = time.time()
dataset = hs.open_cohort(sys.argv[1:]).patch_dataset(patch_size_px=224, um_per_px=0.5)
built = time.time()
for store in dataset.stores:
    dataset[dataset.items_of([store])[0]]
print(json.dumps({"t": [imported, built, time.time()], "genes": dataset.genes, "modules": sorted(
    m for m in ("scanpy", "numba", "sklearn", "spatialdata", "torch") if m in sys.modules)}))
"""


def stores_dir(pixel_size: float, n_stores: int) -> Path:
    return WORK / f"patch_cohort_ps{pixel_size}_{n_stores}_v{INPUT_VERSION}"


def ensure_stores(pixel_size: float, n_stores: int) -> list[Path]:
    """``n_stores`` stores of the sample under other ids (own zarr.json, tables, shapes; images symlinked)."""
    ensure_sample(pixel_size)
    source = sample_dir(pixel_size) / "stores" / f"{SAMPLE_ID}.zarr"
    folder = stores_dir(pixel_size, n_stores)
    paths = [folder / f"PC{i:02d}.zarr" for i in range(n_stores)]
    if (folder / "done").is_file():
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, target in enumerate(paths):
        shutil.copytree(source, target, ignore=lambda d, names: ["images"] if Path(d) == source else [])
        (target / "images").symlink_to(source / "images", target_is_directory=True)
        root = json.loads((target / "zarr.json").read_text())
        root["attributes"]["hest"]["sample_id"] = f"PC{i:02d}"
        root["attributes"]["hest"]["metadata"] |= {"id": f"PC{i:02d}", "patient": f"P{i}"}
        (target / "zarr.json").write_text(json.dumps(root))
    (folder / "done").write_text("ok\n")
    return paths


# --------------------------------------------------------------------------------------------- children


def child_h5(pixel_size: float, n_stores: int) -> dict[str, Any]:
    """HEST's h5 of the sample read shuffled, once per store (the same images the dataset makes)."""
    import h5py
    import numpy as np

    with h5py.File(sample_dir(pixel_size) / "hest" / "patches" / f"{SAMPLE_ID}.h5", "r") as h5:
        images = h5["img"]
        order = np.random.default_rng(0).permutation(len(images) * n_stores) % len(images)
        with _harness.Stopwatch() as read:
            for i in order.tolist():
                images[i]
    return {"n": len(order), "s": read.wall, "cpu_s": read.cpu}


def child_dataset(pixel_size: float, stores: list[str]) -> dict[str, Any]:
    """Open, first items, two shuffled epochs in batches and the fidelity, in this fresh process."""
    import h5py
    import numpy as np

    import hest_spatialdata as hs

    remote = stores[0].startswith("s3://")
    with _harness.Stopwatch() as building:  # the genes (HEST's get_k_genes) and the spot tables, once
        if remote:
            from hest_spatialdata.cohort import CohortPatchDataset

            dataset = CohortPatchDataset({Path(s).stem: s for s in stores}, patch_size_px=224, um_per_px=0.5)
        else:
            dataset = hs.open_cohort([Path(s) for s in stores]).patch_dataset(patch_size_px=224, um_per_px=0.5)
    # what each DataLoader worker pays: the dataset arrives pickled (genes chosen), its stores are opened there
    dataset = pickle.loads(pickle.dumps(dataset))
    with _harness.Stopwatch() as opening:
        for sample_id in dataset.stores:
            dataset.dataset(sample_id)
    imported = "spatialdata" in sys.modules
    firsts = [dataset.items_of([s])[0] for s in dataset.stores]
    with _harness.Stopwatch() as first:
        dataset.__getitems__(firsts)
    order = [i for i in np.random.default_rng(0).permutation(len(dataset)).tolist() if i not in set(firsts)]
    epochs = []
    for _ in range(2):
        with _harness.Stopwatch() as epoch:
            for start in range(0, len(order), BATCH):
                dataset.__getitems__(order[start : start + BATCH])
        epochs.append(epoch)
    with h5py.File(sample_dir(pixel_size) / "hest" / "patches" / f"{SAMPLE_ID}.h5", "r") as h5:
        h5_images, barcodes = h5["img"][()], h5["barcode"].asstr()[()][:, 0]
    fetched = _fetch_alone([dataset.dataset(s) for s in dataset.stores]) if remote else {}
    sample = next(iter(dataset.stores))
    own = dataset.dataset(sample)
    position = {b: i for i, b in enumerate(own.barcodes)}
    pairs = [(position[b], j) for j, b in enumerate(barcodes) if b in position]
    patches = own.images([i for i, _ in pairs])
    diffs = [float(np.abs(p.astype(np.int16) - h5_images[j]).mean()) for p, (_, j) in zip(patches, pairs, strict=True)]
    return {
        "n": len(order), "stores": len(firsts), "build_s": building.wall, "open_s": opening.wall,
        "open_cpu_s": opening.cpu,
        "first_items_s": first.wall,
        "spatialdata_imported": imported,
        "epoch1_s": epochs[0].wall, "epoch1_cpu_s": epochs[0].cpu, "epoch2_s": epochs[1].wall,
        "fidelity_n": len(diffs), "mad_median": float(np.median(diffs)), "mad_p95": float(np.percentile(diffs, 95)),
        "level": own.level, "cache_mib": _harness.mib(dataset._cache.nbytes), "threads": own._cutter.threads,
    } | fetched  # fmt: skip


def _fetch_alone(datasets: list[Any]) -> dict[str, Any]:
    """The limit of an epoch from S3: the chunk files it decodes fetched concurrently, nothing decoded.

    The chunks under the datasets' patches, every one of them in flight at once through the loader's own
    ``StoreFiles.fetch`` (its connections warm from the epochs), in this process.
    """
    if not all(hasattr(own._cutter.chunks, "fetch") for own in datasets):
        return {}  # a --baseline-src package from before StoreFiles.fetch
    levels = []
    for own in datasets:
        cutter = own._cutter
        blocks = sorted({b for i in range(len(cutter.origins)) for b in cutter._blocks(i)})
        levels.append((cutter.chunks, blocks))
    with _harness.Stopwatch() as fetch:
        futures = [f for chunks, blocks in levels for f in chunks.fetch(blocks)]
        sizes = [len(f.result() or b"") for f in futures]
    return {"fetch_s": fetch.wall, "fetch_cpu_s": fetch.cpu, "fetch_chunks": len(sizes), "fetch_bytes": sum(sizes)}


#: Whole chunk files read by each client of the S3 comparison (``--child-fetch``), all at once.
FETCH_CHUNKS = 120
#: The S3 epoch's goal against the local one (issue 21).
S3_GOAL = 0.7
#: The S3 run whose client talks to moto directly, not through the fault-injecting proxy that counts the requests.
S3_DIRECT = "s3, moto without the proxy"


def child_fetch(client: str, url: str) -> dict[str, Any]:
    """Read the first :data:`FETCH_CHUNKS` level-0 chunk files of a store at ``url`` concurrently with one client.

    ``s3fs cat`` is what the loader did before issue 21, ``s3fs cat_ranges`` what it does (one GET per chunk),
    ``obstore`` and ``zarr ObjectStore`` the maintained alternatives (``pip install obstore``).
    """
    import asyncio

    import s3fs

    fs = s3fs.S3FileSystem()  # the environment: endpoint and keys of the loopback server
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    grid = json.loads(fs.cat_file(f"{bucket}/{prefix}/images/he/s0/zarr.json"))
    _, height, width = grid["shape"]
    _, ch, cw = grid["chunk_grid"]["configuration"]["chunk_shape"]
    keys = [f"{prefix}/images/he/s0/c/0/{y}/{x}" for y in range(-(-height // ch)) for x in range(-(-width // cw))]
    keys = keys[:FETCH_CHUNKS]
    fs.invalidate_cache()  # no listing known: as the loader, which never lists
    with _harness.Stopwatch() as fetch:
        if client == "s3fs cat":
            got = list(fs.cat([f"{bucket}/{k}" for k in keys], on_error="raise").values())
        elif client == "s3fs cat_ranges":
            got = fs.cat_ranges([f"{bucket}/{k}" for k in keys], [0] * len(keys), [None] * len(keys))
        else:
            from obstore.store import S3Store

            store = S3Store(
                bucket, endpoint=os.environ["AWS_ENDPOINT_URL_S3"], region=os.environ.get("AWS_DEFAULT_REGION"),
                client_options={"allow_http": True},
            )  # fmt: skip
            got = asyncio.run(_obstore_fetch(store, keys, zarr_store=client == "zarr ObjectStore"))
    return {"client": client, "n": len(keys), "s": fetch.wall, "bytes": sum(len(g) for g in got)}


async def _obstore_fetch(store: Any, keys: list[str], *, zarr_store: bool) -> list[bytes]:
    import asyncio

    if zarr_store:
        import zarr.storage
        from zarr.core.buffer import default_buffer_prototype

        objects = zarr.storage.ObjectStore(store, read_only=True)
        buffers = await asyncio.gather(*(objects.get(k, default_buffer_prototype()) for k in keys))
        return [b.to_bytes() for b in buffers]
    import obstore

    async def one(key: str) -> bytes:
        return bytes(await (await obstore.get_async(store, key)).bytes_async())

    return await asyncio.gather(*(one(k) for k in keys))


def fresh_process(stores: list[str]) -> dict[str, Any]:
    """:data:`FRESH_PROCESS` in a new interpreter: seconds from its start to the first item of each store."""
    import hashlib
    import subprocess

    load_before = _harness.load1()
    start = time.time()
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *stores], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    imported, built, first = (t - start for t in out["t"])
    genes = hashlib.sha1("\n".join(out["genes"]).encode()).hexdigest()[:12]
    return {"first_items_s": first, "import_s": imported, "dataset_s": built - imported, "items_s": first - built,
            "genes": len(out["genes"]), "genes_sha1": genes, "modules": out["modules"],
            "load": (load_before, _harness.load1())}  # fmt: skip


# --------------------------------------------------------------------------------------------- driver


def upload(stores: list[Path], server: Any) -> list[str]:
    """Copy the stores (images resolved) into a fresh bucket of the loopback server; their URLs."""
    import s3fs

    bucket = server.new_bucket("patches")
    fs = s3fs.S3FileSystem(**server.storage_options())
    urls = []
    for store in stores:
        fs.put(str(store.resolve()) + "/", f"{bucket}/{store.name}", recursive=True)
        for entry in (store / "images").resolve().rglob("*"):
            if entry.is_file():
                key = f"{bucket}/{store.name}/images/{entry.relative_to((store / 'images').resolve())}"
                fs.put_file(str(entry), key)
        urls.append(f"s3://{bucket}/{store.name}")
    return urls


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_patches.py --cohort")
    parser.add_argument("--pixel-size", type=float, default=0.27)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--s3", action="store_true", help="also read the stores from a loopback S3 server")
    parser.add_argument("--s3-stores", type=int, default=1)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="with --s3: also read the S3 epoch with the package from this src folder (e.g. main's), in the same run",
    )
    parser.add_argument("--fresh-only", action="store_true", help="only the fresh process's first items")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    _harness.run_script(__file__, "--build", args.pixel_size, args.stores, capture=False)
    stores = [str(p) for p in stores_dir(args.pixel_size, args.stores).glob("PC*.zarr")]
    print(_harness.machine_text(), flush=True)
    if args.fresh_only:
        runs = [fresh_process(sorted(stores)) for _ in range(args.repeat)]
        print("\n".join(f"  fresh run {r}: {json.dumps(run)}" for r, run in enumerate(runs)), flush=True)
        header = ["figure", "measured", "goal", "/ h5 rate", "notes", "load 1-min"]
        _harness.print_table(header, [fresh_row(runs, len(stores))], note=_harness.machine_text())
        return
    runs: dict[str, list[dict[str, Any]]] = {"h5": [], "local": []}
    for r, mode in _harness.rounds(["h5", "local"], args.repeat):
        extra = [args.stores] if mode == "h5" else sorted(stores)
        run = _harness.run_script(__file__, f"--child-{mode}", args.pixel_size, *extra)
        runs[mode].append(run.result | {"rss": run.peak_rss, "load": (run.load_before, run.load_after)})
        print(f"  {mode:>6} run {r}: {json.dumps(runs[mode][-1])}", flush=True)
    fetches: list[dict[str, Any]] = []
    runs["fresh"] = [fresh_process(sorted(stores)) for _ in range(args.repeat)]
    for r, run in enumerate(runs["fresh"]):
        print(f"  fresh run {r}: {json.dumps(run)}", flush=True)
    if args.s3:
        runs |= _s3_runs(args, sorted(stores)[: args.s3_stores], fetches)
    report(runs)
    if fetches:
        _report_fetches(fetches)


def _s3_runs(args: argparse.Namespace, stores: list[str], fetches: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The S3 epochs (this package, and ``--baseline-src``'s), alternating, and the clients' chunk fetches."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.s3_server import LoopbackS3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    sources = {"s3": None} | ({"s3 baseline src": args.baseline_src} if args.baseline_src else {})
    sources |= {S3_DIRECT: None}
    runs: dict[str, list[Any]] = {name: [] for name in sources}
    with LoopbackS3(own_process=True) as server:  # moto's CPU apart from the proxy's GIL and the driver's
        t0 = time.perf_counter()
        urls = upload([Path(s) for s in stores], server)
        print(f"  uploaded {len(urls)} store(s) to the loopback S3 in {time.perf_counter() - t0:.0f} s", flush=True)
        env = {**os.environ, **server.env()}
        moto = "http://{}:{}".format(*server.moto_address)  # no proxy: nothing logged, no Python hop copying bodies
        for r, name in _harness.rounds(list(sources), max(1, args.repeat - 1)):
            child_env = env | ({"PYTHONPATH": str(sources[name])} if sources[name] else {})
            child_env |= {"AWS_ENDPOINT_URL_S3": moto} if name == S3_DIRECT else {}
            server.reset_log()
            server_cpu = server.cpu_seconds()  # the driver only waits meanwhile
            run = _harness.run_script(__file__, "--child-local", args.pixel_size, *urls, env=child_env)
            server_cpu = server.cpu_seconds() - server_cpu
            chunk_gets = sum(1 for m, k, _, _ in server.log if m == "GET" and "/images/he/" in k and "/c/" in k)
            chunk_requests = sum(1 for _, k, _, _ in server.log if "/images/he/" in k and "/c/" in k)
            runs[name].append(run.result | {
                "rss": run.peak_rss, "load": (run.load_before, run.load_after),
                "fetched_mib": _harness.mib(server.sent()), "requests": server.requests(),
                "heads": server.requests(method="HEAD"), "per_chunk": chunk_requests / max(chunk_gets, 1),
                "server_cpu_ms_per_request": 1e3 * server_cpu / max(server.requests(), 1),
            })  # fmt: skip
            print(f"  {name} run {r}: {json.dumps(runs[name][-1])}", flush=True)
        for client in ("s3fs cat", "s3fs cat_ranges", "obstore", "zarr ObjectStore"):
            server.reset_log()
            run = _harness.run_script(__file__, "--child-fetch", client, urls[0], env=env)
            fetches.append(run.result | {"requests": server.requests(), "load": (run.load_before, run.load_after)})
    return runs


def _report_fetches(fetches: list[dict[str, Any]]) -> None:
    rows = [
        [f["client"], f"{f['n'] / f['s']:,.0f} chunks/s", f"{_harness.mib(f['bytes']) / f['s']:,.0f} MiB/s",
         f"{f['requests'] / f['n']:.2f}", _loads([f])]
        for f in fetches
    ]  # fmt: skip
    _harness.print_table(
        ["S3 client (fetching chunk files concurrently)", "chunks/s", "MiB/s", "requests per chunk", "load 1-min"],
        rows,
        note=f"{FETCH_CHUNKS} level-0 chunk files of one store, all at once, in a fresh process per client.",
    )


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    h5 = max(r["n"] / r["s"] for r in runs["h5"])
    h5_cpu = min(1e3 * r["cpu_s"] / r["n"] for r in runs["h5"])
    rows = [["HEST h5, shuffled (the limit)", f"{h5:,.0f} /s", "", "1.00", f"CPU {h5_cpu:.3f} ms/patch",
             _loads(runs["h5"])]]  # fmt: skip
    local_rate = max(r["n"] / r["epoch1_s"] for r in runs["local"])
    for name in ("local", "s3", "s3 baseline src", S3_DIRECT):
        if name not in runs:
            continue
        best = max(runs[name], key=lambda r: r["n"] / r["epoch1_s"])
        first, second = best["n"] / best["epoch1_s"], best["n"] / best["epoch2_s"]
        opening = min(r["open_s"] for r in runs[name])
        where = f"{name}, {len(runs[name])} run(s)"
        rows += [
            [f"first epoch ({where})", f"{first:,.0f} /s", f">= {GOALS['first epoch /s']:,}", f"{first / h5:.2f}",
             f"CPU {1e3 * best['epoch1_cpu_s'] / best['n']:.3f} ms/patch ({best['epoch1_cpu_s']:.1f} s), "
             f"first items {best['first_items_s']:.2f} s; every run: "
             + ", ".join(f"{r['n'] / r['epoch1_s']:,.0f}" for r in runs[name]), _loads(runs[name])],
            [f"first epoch, first items included ({where})",
             f"{(best['n'] + best['stores']) / (best['epoch1_s'] + best['first_items_s']):,.0f} /s", "",
             f"{(best['n'] + best['stores']) / (best['epoch1_s'] + best['first_items_s']) / h5:.2f}",
             "the first item of a store cuts its band and pays one-time costs (threads, OpenCV's import)",
             _loads(runs[name])],
            [f"second epoch ({where})", f"{second:,.0f} /s", f">= {GOALS['second epoch /s']:,}",
             f"{second / h5:.2f}", f"cache {best['cache_mib']:,.0f} MiB", _loads(runs[name])],
            [f"opening the stores of a pickled dataset, as a worker does ({where})", f"{opening:.2f} s",
             f"<= {GOALS['open 3 stores s']}", "",
             f"CPU {best['open_cpu_s']:.2f} s, spatialdata imported: {best['spatialdata_imported']}",
             _loads(runs[name])],
            [f"building the dataset: spot tables + HEST's gene rule ({where})",
             f"{min(r['build_s'] for r in runs[name]):.2f} s", "", "", "once per training run, in the main process",
             _loads(runs[name])],
            [f"fidelity vs h5, {best['fidelity_n']} patches ({where})",
             f"median {best['mad_median']:.2f}, p95 {best['mad_p95']:.2f}",
             f"<= {FIDELITY_LIMITS['median']}, <= {FIDELITY_LIMITS['p95']}", "", f"level {best['level']}",
             _loads(runs[name])],
        ]  # fmt: skip
        if name != "local":
            alone = (_harness.mib(best.get("fetch_bytes", 0)), best.get("fetch_chunks", 0))  # not the dataset's
            if name != S3_DIRECT:
                rows[-1][4] += (
                    f"; {best['fetched_mib'] - alone[0]:,.0f} MiB in {best['requests'] - alone[1]:,} requests (the "
                    "chunks fetched alone left out)"
                )
            counted = (
                f"requests per chunk read {best['per_chunk']:.2f} (goal 1), HEAD requests {best['heads']}; server "
                f"CPU {best['server_cpu_ms_per_request']:.1f} ms per request, on the same 2 cores"
                if name != S3_DIRECT else "requests not counted (no proxy)"
            )  # fmt: skip
            s3_rows = [[f"first epoch, S3 / local ({where})", f"{first / local_rate:.2f}x", f">= {S3_GOAL}x", "",
                        counted, _loads(runs[name])]]  # fmt: skip
            if "fetch_s" in best:
                s3_rows.append(_fetch_row(best, where, local_rate, _loads(runs[name])))
            rows[len(rows) - 6 : len(rows) - 6] = s3_rows
    rows.append(fresh_row(runs["fresh"], stores_of(runs)))
    header = ["figure", "measured", "goal", "/ h5 rate", "notes", "load 1-min"]
    note = f"{_harness.machine_text()}; patches/s count the items after the first item of each store."
    _harness.print_table(header, rows, note=note)


def _fetch_row(best: dict[str, Any], where: str, local_rate: float, loads: str) -> list[str]:
    """The row of :func:`_fetch_alone`: the S3 epoch's own limit on this server."""
    limit, as_epoch = best["fetch_chunks"] / best["fetch_s"], (best["n"] + best["stores"]) / best["fetch_s"]
    return [
        f"the epoch's {best['fetch_chunks']} chunk files fetched alone, all in flight, nothing decoded ({where})",
        f"{best['fetch_s']:.2f} s", "", "",
        f"{limit:,.0f} chunks/s, {_harness.mib(best['fetch_bytes']) / best['fetch_s']:,.0f} MiB/s, client CPU "
        f"{best['fetch_cpu_s']:.2f} s; as an epoch's limit {as_epoch:,.0f} /s = {as_epoch / local_rate:.2f}x local; "
        f"the S3 epoch took {best['epoch1_s'] / best['fetch_s']:.2f}x this time", loads,
    ]  # fmt: skip


def stores_of(runs: dict[str, list[dict[str, Any]]]) -> int:
    return runs["local"][0]["stores"]


def fresh_row(runs: list[dict[str, Any]], n_stores: int) -> list[str]:
    """The table row of :func:`fresh_process`'s runs (the fastest shown, every run's figure in the notes)."""
    best = min(runs, key=lambda r: r["first_items_s"])
    modules = ", ".join(best["modules"]) or "none of scanpy, numba, sklearn, spatialdata, torch"
    return [
        f"fresh process: open_cohort({n_stores} stores) + patch_dataset(224 px, 0.5 um/px) to the first item of "
        f"each store ({len(runs)} run(s))", f"{best['first_items_s']:.2f} s", f"<= {GOALS['fresh first items s']}",
        "", f"import {best['import_s']:.2f} s, dataset (tables + genes) {best['dataset_s']:.2f} s, items "
        f"{best['items_s']:.2f} s; every run: {', '.join(f'{r['first_items_s']:.2f}' for r in runs)} s; "
        f"{best['genes']} genes sha1 {best['genes_sha1']}; imported: {modules}", _loads(runs),
    ]  # fmt: skip


def _loads(results: list[dict[str, Any]]) -> str:
    return _harness.load_range_text(x for r in results for x in r["load"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if sys.argv[1] == "--build":
        ensure_stores(float(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "--child-h5":
        _harness.emit(child_h5(float(sys.argv[2]), int(sys.argv[3])))
    elif sys.argv[1] == "--child-fetch":
        _harness.emit(child_fetch(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "--child-local":
        _harness.emit(child_dataset(float(sys.argv[2]), sys.argv[3:]))
