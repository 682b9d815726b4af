"""Patch reading without spatialdata: the store parts against spatialdata's reading, the resampling against plain
OpenCV / PIL resizes of HEST's squares, bands against single patches, remote against local."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
import weakref
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hest_spatialdata.loaders.dataset import PatchDataset, hest_squares
from hest_spatialdata.storage._parts import StoreFiles, image_levels, read_spot_table, shape_centres


def _hest_square_resized(sdata, dataset: PatchDataset, index: int, method: str) -> np.ndarray:
    """HEST's square of the chosen level (black off the slide), resized by ``cv2.resize`` or PIL's bilinear filter."""
    import cv2

    level = np.asarray(_levels(sdata)[dataset.level].data).transpose(1, 2, 0)
    x0, y0 = (int(v) for v in dataset._cutter.origins[index])
    size = dataset._cutter.size
    crop = np.zeros((size, size, 3), np.uint8)
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + size, level.shape[1]), min(y0 + size, level.shape[0])
    crop[ya - y0 : yb - y0, xa - x0 : xb - x0] = level[ya:yb, xa:xb]
    out = (dataset.patch_size_px,) * 2
    if method == "hest":
        return cv2.resize(crop, out)
    return crop if size == dataset.patch_size_px else np.asarray(Image.fromarray(crop).resize(out, Image.BILINEAR))


def _levels(sdata) -> list:
    tree = sdata["he"]
    return [tree[name]["image"] for name in sorted(tree.children, key=lambda n: int(n.removeprefix("scale")))]


def test_store_parts_equal_spatialdata(visium_store: Path, sdata) -> None:
    """Transformations, level sizes and spot centres read from the files are spatialdata's own."""
    from spatialdata.transformations import get_transformation

    files = StoreFiles(visium_store)
    levels = image_levels(files)
    assert len(levels) == len(_levels(sdata)) > 2
    for level, element in zip(levels, _levels(sdata), strict=True):
        assert level.shape == tuple(element.shape)
        matrix = get_transformation(element, "global").to_affine_matrix(("x", "y"), ("x", "y"))
        np.testing.assert_allclose(level.to_level, np.linalg.inv(matrix), atol=1e-9)
        microns = get_transformation(element, "microns").to_affine_matrix(("x", "y"), ("x", "y"))
        assert level.um_per_px == pytest.approx(np.abs(np.diag(microns)[:2]).max())
    ids, centres = shape_centres(files, "spots")
    spots = sdata["spots"]
    assert list(ids) == list(spots.index.astype(str))
    np.testing.assert_allclose(centres, np.column_stack([spots.geometry.x, spots.geometry.y]))
    table = read_spot_table(files)
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert (table.X != sdata["table"].X).nnz == 0


@pytest.mark.parametrize(
    ("patch_size_px", "um_per_px", "tolerance"),
    [(224, 0.5, 0.01), (40, 3.0, 0.01), (20, 5.0, -0.55), (33, 3.4, -0.45), (32, 4.0, -0.49), (48, 2.0, 0.01)],
)
def test_resample_modes_are_their_resizes(sdata, patch_size_px, um_per_px, tolerance) -> None:
    """``hest`` is cv2.resize of HEST's square, ``antialias`` PIL's bilinear resize of it, pixel for pixel, at
    enlargements, reductions (1.7x of level 0, 2.5x), an integer factor (2x) and none (1x)."""
    order = np.random.default_rng(0).permutation(len(sdata["table"]))[:40]
    options = {"patch_size_px": patch_size_px, "um_per_px": um_per_px, "level_tolerance": tolerance}
    datasets = {method: PatchDataset(sdata, resample=method, **options) for method in ("hest", "antialias")}
    for method, dataset in datasets.items():
        for i in order.tolist():
            np.testing.assert_array_equal(dataset[i][0], _hest_square_resized(sdata, dataset, i, method))


def test_hest_squares_follow_dump_patches() -> None:
    """HEST's corner: ``int(centre - size_src // 2)`` (truncated toward zero), side ``round(224 * downsample)``."""
    centres = np.array([[1000.6, 2000.2], [100.3, 5.0], [-3.7, 10.0]])
    origins, size = hest_squares(centres, 224, 0.5 / 0.2738, 1.0)
    size_src = 224 * 0.5 / 0.2738  # 409.06: HEST subtracts 204.0
    assert size == 409
    np.testing.assert_array_equal(origins, [[796, 1796], [-103, -199], [-207, -194]])
    assert (origins == (centres - size_src // 2).astype(int)).all()
    origins, size = hest_squares(centres, 224, 0.5 / 0.2, 2.0)  # level 1 of a 0.2 µm/px slide: 560 / 2
    assert size == 280 and origins[0].tolist() == [360, 860]


def test_bands_batches_and_single_patches_agree(visium_store: Path) -> None:
    ahead = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0, read_ahead=True, threads=2)
    single = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0, read_ahead=False, threads=1)
    order = np.random.default_rng(3).permutation(len(ahead))[:200].tolist()
    batch = ahead.__getitems__(order)
    for i, (image, expression, barcode) in zip(order, batch, strict=True):
        np.testing.assert_array_equal(image, single[i][0])
        np.testing.assert_array_equal(expression, single[i][1])
        assert barcode == single.barcodes[i]
    cached = ahead._cutter.cache.nbytes
    assert cached >= 200 * 40 * 40 * 3  # finished patches kept
    np.testing.assert_array_equal(ahead[order[0]][0], batch[0][0])  # a second read copies the kept patch
    ahead[order[0]][0][:] = 0
    np.testing.assert_array_equal(ahead[order[0]][0], batch[0][0])  # ... so a caller cannot spoil it
    copy = pickle.loads(pickle.dumps(ahead))  # what a DataLoader worker gets: no patches, no locks
    assert copy._cutter.cache.nbytes == 0
    np.testing.assert_array_equal(copy[order[1]][0], batch[1][0])
    with pytest.raises(ValueError, match="resample must be one of"):
        PatchDataset(visium_store, resample="nearest")


def test_opening_imports_no_spatialdata(visium_store: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import hest_spatialdata as hs\n"
        "from hest_spatialdata.loaders import PatchDataset\n"
        f"d = PatchDataset({str(visium_store)!r}, genes=None)\n"
        "d[0]; d.__getitems__([1, 2])\n"
        f"c = hs.open_cohort([{str(visium_store)!r}]).patch_dataset(n_genes=5)\n"
        "c[0]\n"
        "print('spatialdata' in sys.modules, 'geopandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_file_url_equals_local_path(visium_store: Path) -> None:
    """A store named by URL is read through fsspec (here its LocalFileSystem), with the same results."""
    local = PatchDataset(visium_store, patch_size_px=32, um_per_px=4.0)
    remote = PatchDataset(f"file://{visium_store}", patch_size_px=32, um_per_px=4.0)
    assert not remote._cutter.chunks.files.local
    for i in (0, 5, len(local) - 1):
        np.testing.assert_array_equal(remote[i][0], local[i][0])
        np.testing.assert_array_equal(remote[i][1], local[i][1])


def test_s3_store_equals_local(visium_store: Path, s3_bucket) -> None:
    """The same dataset over a loopback S3 server (moto): same items, chunks fetched concurrently per band."""
    import s3fs

    from hest_spatialdata.cohort import CohortPatchDataset

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    fs.put(str(visium_store) + "/", f"{s3_bucket.name}/stores/{visium_store.name}", recursive=True)
    url = s3_bucket.url("stores", visium_store.name)
    local = PatchDataset(visium_store, patch_size_px=32, um_per_px=4.0, genes=None)
    remote = PatchDataset(url, patch_size_px=32, um_per_px=4.0, storage_options=s3_bucket.storage_options)
    order = np.random.default_rng(0).permutation(len(local))[:50].tolist()
    for (image, expression, barcode), i in zip(remote.__getitems__(order), order, strict=True):
        np.testing.assert_array_equal(image, local[i][0])
        np.testing.assert_array_equal(expression, local[i][1])
        assert barcode == local.barcodes[i]
    assert s3_bucket.server.requests(f"{s3_bucket.name}/stores/{visium_store.name}/images") > 0
    cohort_local = CohortPatchDataset({"S": visium_store}, patch_size_px=32, um_per_px=4.0, n_genes=5)
    cohort_remote = CohortPatchDataset({"S": url}, patch_size_px=32, um_per_px=4.0, n_genes=5)
    assert cohort_remote.genes == cohort_local.genes
    for a, b in zip(cohort_remote.__getitems__([0, 7]), cohort_local.__getitems__([0, 7]), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2:] == b[2:]


def _s3_dataset(visium_store: Path, s3_bucket, um_per_px: float = 4.0) -> tuple[PatchDataset, PatchDataset, str]:
    """The store uploaded to a fresh prefix of the bucket; its dataset there, the local one, the chunks' prefix."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    fs.put(str(visium_store) + "/", f"{s3_bucket.name}/one/{visium_store.name}", recursive=True)
    url = s3_bucket.url("one", visium_store.name)
    local = PatchDataset(visium_store, patch_size_px=32, um_per_px=um_per_px, genes=None)
    remote = PatchDataset(url, patch_size_px=32, um_per_px=um_per_px, storage_options=s3_bucket.storage_options)
    return local, remote, f"{s3_bucket.name}/one/{visium_store.name}/images/"


def test_s3_chunks_are_one_get_each(visium_store: Path, s3_bucket) -> None:
    """Each chunk read from S3 is one request: a GET of the whole object (s3fs's cat of a path without a range
    first asked for its size with a HEAD: two requests per chunk)."""
    local, remote, images = _s3_dataset(visium_store, s3_bucket)
    server = s3_bucket.server
    server.reset_log()
    order = np.random.default_rng(1).permutation(len(local)).tolist()
    for batch in (order[start : start + 64] for start in range(0, len(order), 64)):
        for (image, _, _), i in zip(remote.__getitems__(batch), batch, strict=True):
            np.testing.assert_array_equal(image, local[i][0])
    chunk_requests = [(method, key, sent) for method, key, _, sent in server.log if key.startswith(images)]
    assert len(chunk_requests) >= 2  # the level's chunks were read ...
    assert {method for method, _, _ in chunk_requests} == {"GET"}  # ... with no HEAD ...
    sizes = {key: len(data) for key, data in s3_bucket.objects(images.split("/", 1)[1]).items()}
    for _, key, sent in chunk_requests:  # ... each GET bringing the whole chunk file
        assert sent == sizes[key.split("/", 1)[1]]


@pytest.mark.parametrize("fault", [{"fail_every": 2}, {"cut_every": 2}, {"fail_every": 3, "cut_every": 2}])
def test_s3_chunk_reads_survive_503s_and_cut_bodies(visium_store: Path, s3_bucket, fault) -> None:
    """A chunk GET answered 503, or whose body is cut half-way with the connection closed, is retried: the patches
    are exact."""
    local, remote, _ = _s3_dataset(visium_store, s3_bucket, um_per_px=1.0)  # level 0: 6 chunks
    server = s3_bucket.server
    server.set_faults(**fault, methods=("GET",))
    order = np.random.default_rng(2).permutation(len(local))[:40].tolist()
    for (image, _, _), i in zip(remote.__getitems__(order), order, strict=True):
        np.testing.assert_array_equal(image, local[i][0])
    assert sum(server.faults.values()) >= 2


def test_s3_chunk_reads_ask_again_once_the_filesystem_gives_up(visium_store: Path, s3_bucket, monkeypatch) -> None:
    """With s3fs allowed a single try, every third chunk GET cut half-way still gives exact patches: the loader asks
    for a chunk again when its filesystem's own retries are spent."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    local, remote, _ = _s3_dataset(visium_store, s3_bucket, um_per_px=1.0)
    server = s3_bucket.server
    server.set_faults(cut_every=3, methods=("GET",))
    order = np.random.default_rng(3).permutation(len(local))[:40].tolist()
    for (image, _, _), i in zip(remote.__getitems__(order), order, strict=True):
        np.testing.assert_array_equal(image, local[i][0])
    assert server.faults["cut"] >= 2


class _CountingChunks:
    """A level's chunks (a real H&E image in ``chunk``-px chunks) that counts its reads and its decoded chunks alive."""

    def __init__(self, image: np.ndarray, chunk: int) -> None:
        import dask.array as da

        from hest_spatialdata.loaders._patch_reader import DaskChunks

        self._chunks = DaskChunks(da.from_array(image, chunks=(image.shape[0], chunk, chunk)))
        self.shape, self.y_edges, self.x_edges = self._chunks.shape, self._chunks.y_edges, self._chunks.x_edges
        self.reads: Counter = Counter()
        self.alive = self.peak = 0
        self._lock = threading.Lock()

    def read(self, by: int, bx: int) -> np.ndarray:
        block = np.array(self._chunks.read(by, bx))
        with self._lock:
            self.reads[by, bx] += 1
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(block, self._freed)
        return block

    def _freed(self) -> None:
        with self._lock:
            self.alive -= 1


def _epoch(cutter, n: int, seed: int) -> dict[int, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    batches = [order[start : start + 32] for start in range(0, n, 32)]
    return {i: patch for batch in batches for i, patch in zip(batch, cutter.patches(batch), strict=True)}


def test_an_epoch_decodes_each_chunk_once_and_holds_few_rows(visium_store: Path, sdata) -> None:
    """Bands of squares that straddle chunk rows: the chunks two bands share are decoded once (kept as spares), and
    a band, however tall, holds at most three chunk rows at once."""
    from hest_spatialdata.loaders._patch_reader import BAND_ROWS, ChunkCache, PatchCutter

    image = np.asarray(_levels(sdata)[0].data)
    dataset = PatchDataset(visium_store, patch_size_px=64, um_per_px=2.0)
    origins, size, n = dataset._cutter.origins, dataset._cutter.size, len(dataset)
    assert size == 64
    single = PatchCutter(
        _CountingChunks(image, 160), origins, size, 48, ChunkCache(0), "x", read_ahead=False, threads=1
    )
    expected = {i: single.patches([i])[0] for i in range(n)}

    ample = _CountingChunks(image, 160)
    cutter = PatchCutter(ample, origins, size, 48, ChunkCache(2**30), "x", read_ahead=True, threads=2)
    for i, patch in _epoch(cutter, n, seed=0).items():
        np.testing.assert_array_equal(patch, expected[i])
    assert set(ample.reads) == {b for i in range(n) for b in cutter._blocks(i)}
    assert max(ample.reads.values()) == 1
    straddling = int((cutter.rows[:, 1] // BAND_ROWS != cutter.band_of).sum())
    assert straddling > 0.15 * n  # the case at stake: many squares reach into the next band

    nothing_kept = _CountingChunks(image, 160)  # no cache: every band decodes all its chunks, as it goes
    cutter = PatchCutter(nothing_kept, origins, size, 48, ChunkCache(0), "x", read_ahead=True, threads=2)
    for band in np.unique(cutter.band_of)[1:4].tolist():
        members = np.flatnonzero(cutter.band_of == band).tolist()
        for i, patch in zip(members, cutter.patches(members), strict=True):
            np.testing.assert_array_equal(patch, expected[i])
    assert cutter.cache.nbytes == 0
    assert nothing_kept.peak <= 3 * (len(nothing_kept.x_edges) - 1)  # rows r - 1, r (being cut) and r + 1


def test_chunk_cache_drops_spares_first() -> None:
    from hest_spatialdata.loaders.dataset import ChunkCache

    block = np.zeros((10, 10, 3), np.uint8)  # 300 bytes
    cache = ChunkCache(900)
    cache.put(("spare",), block.copy(), spare=True)
    cache.put(("a",), block.copy())
    cache.put(("b",), block.copy())
    cache.get(("spare",))  # recently used, but a spare
    cache.put(("c",), block.copy())
    assert cache.get(("spare",)) is None and all(cache.get((k,)) is not None for k in "abc")
    assert cache.pop(("a",)) is not None and cache.pop(("a",)) is None and cache.nbytes == 600


def test_each_request_cuts_one_more_band_ahead(visium_store: Path, sdata) -> None:
    """After a request, the band next to it is cut in the background (an epoch asks for every band): its patches
    are then served from the cache, equal to cutting them on request."""
    from hest_spatialdata.loaders._patch_reader import _AHEAD_BUSY, ChunkCache, PatchCutter

    image = np.asarray(_levels(sdata)[0].data)
    dataset = PatchDataset(visium_store, patch_size_px=64, um_per_px=2.0)
    origins, size = dataset._cutter.origins, dataset._cutter.size
    single = PatchCutter(
        _CountingChunks(image, 160), origins, size, 48, ChunkCache(0), "x", read_ahead=False, threads=1
    )
    chunks = _CountingChunks(image, 160)
    cutter = PatchCutter(chunks, origins, size, 48, ChunkCache(2**30), "x", read_ahead=True, threads=2)
    first = int(np.flatnonzero(cutter.band_of == 2)[0])
    cutter.patches([first])
    with _AHEAD_BUSY:  # the band cut ahead is done
        pass
    assert cutter._bands_cut == {2, 3}
    reads = sum(chunks.reads.values())
    ahead = np.flatnonzero(cutter.band_of == 3).tolist()
    for i, patch in zip(ahead, cutter.patches(ahead), strict=True):
        np.testing.assert_array_equal(patch, single.patches([i])[0])
    with _AHEAD_BUSY:
        pass
    assert cutter._bands_cut == {2, 3, 4}  # the request found band 3 cut, and started band 4
    assert sum(chunks.reads.values()) > reads  # ... which read chunks of its own


_INHERITED: dict[str, PatchDataset] = {}


def _patches_in_child(dataset: PatchDataset | None, indices: list[int]) -> list[np.ndarray]:
    return (dataset if dataset is not None else _INHERITED["dataset"]).images(indices)


def test_a_forked_worker_reads_after_the_parent_did(visium_store: Path) -> None:
    """A DataLoader worker started by fork (Linux's default) after the parent read patches (its pools running, a
    band being cut ahead): the child's pools and locks start afresh, and it reads the same patches, whether the
    dataset reaches it pickled or inherited."""
    import multiprocessing

    dataset = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0, read_ahead=True, threads=2)
    order = np.random.default_rng(5).permutation(len(dataset))[:64].tolist()
    expected = dataset.images(order)  # the pools now exist in the parent, a band is being cut ahead
    _INHERITED["dataset"] = dataset
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            pickled = pool.apply_async(_patches_in_child, (dataset, order[:32])).get(timeout=120)
            inherited = pool.apply_async(_patches_in_child, (None, order[32:])).get(timeout=120)
    finally:
        _INHERITED.clear()
    for a, b in zip([*pickled, *inherited], expected, strict=True):
        np.testing.assert_array_equal(a, b)
