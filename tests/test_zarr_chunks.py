"""The loaders' direct chunk reads equal zarr's, chunk by chunk: a change of zarr's on-disk layout fails here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hest_spatialdata.loaders._zarr_chunks import RawChunks, ZarrChunks, open_level
from hest_spatialdata.storage._parts import StoreFiles, image_levels


def _levels(sdata) -> list:
    tree = sdata["he"]
    return [tree[name]["image"] for name in sorted(tree.children, key=lambda n: int(n.removeprefix("scale")))]


@pytest.mark.parametrize("level", [0, 1])
def test_raw_chunks_equal_zarr(visium_store: Path, sdata, level: int) -> None:
    element = _levels(sdata)[level]
    files = StoreFiles(visium_store)
    raw = open_level(files, image_levels(files)[level])
    assert (
        isinstance(raw, RawChunks) and raw.shape == element.shape
    )  # the stores this package writes have the simple layout
    import zarr

    group = zarr.open_group(visium_store / "images" / "he", mode="r")
    array = group[group.attrs["ome"]["multiscales"][0]["datasets"][level]["path"]]
    via_zarr = ZarrChunks(array)
    _, ch, cw = raw.chunk_shape
    n_y, n_x = -(-raw.shape[1] // ch), -(-raw.shape[2] // cw)
    assert n_y * n_x > 1 and (raw.shape[1] % ch or raw.shape[2] % cw)  # several chunks, edge chunks cut
    whole = np.asarray(element.data)
    for by in range(n_y):
        for bx in range(n_x):
            block = raw.read(by, bx)
            np.testing.assert_array_equal(block, via_zarr.read(by, bx))
            np.testing.assert_array_equal(block, whole[:, by * ch : (by + 1) * ch, bx * cw : (bx + 1) * cw])


def test_layouts_raw_chunks_do_not_read(visium_store: Path, sdata, tmp_path: Path) -> None:
    import json
    import shutil

    element = _levels(sdata)[0]
    copy = tmp_path / "store.zarr"
    shutil.copytree(visium_store / "images", copy / "images")
    meta_path = copy / "images" / "he" / "s0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"][1]["name"] = "blosc"  # another codec: zarr reads it (or fails), never the raw reader
    meta_path.write_text(json.dumps(meta))
    assert not RawChunks.simple(meta)
    level = image_levels(StoreFiles(visium_store))[0]
    assert level.shape == element.shape
    assert open_level(StoreFiles(tmp_path / "absent.zarr"), level) is None
    assert open_level(StoreFiles(visium_store), dataclasses.replace(level, shape=(3, 1, 1))) is None


def test_missing_chunk_is_the_fill_value(visium_store: Path, sdata, tmp_path: Path) -> None:
    import shutil

    element = _levels(sdata)[0]
    copy = tmp_path / "store.zarr"
    shutil.copytree(visium_store / "images", copy / "images")
    raw = open_level(StoreFiles(copy), image_levels(StoreFiles(copy))[0])
    assert raw.shape == element.shape
    (copy / raw.chunk_key(0, 0)).unlink()  # zarr omits chunks equal to the fill value
    block = raw.read(0, 0)
    assert block.shape == (3, *raw.chunk_shape[1:]) and not block.any()


@pytest.mark.parametrize("cache_bytes", [0, 2**20, 2**28])
def test_patches_same_from_store_files_and_from_dask(visium_store: Path, sdata, cache_bytes: int) -> None:
    import spatialdata as sd

    from hest_spatialdata.loaders import PatchDataset

    in_memory = sd.SpatialData(
        images={"he": sdata["he"]}, shapes={"spots": sdata["spots"]}, tables={"table": sdata["table"]}
    )
    assert in_memory.path is None
    from_files = PatchDataset(visium_store, patch_size_px=64, um_per_px=1.0, cache_bytes=cache_bytes)
    from_dask = PatchDataset(in_memory, patch_size_px=64, um_per_px=1.0, cache_bytes=cache_bytes)
    assert type(from_files._cutter.chunks).__name__ == "RawChunks"
    assert type(from_dask._cutter.chunks).__name__ == "DaskChunks"
    order = np.random.default_rng(1).permutation(len(from_files))[:300]
    for i in [0, len(from_files) - 1, *order.tolist()]:
        np.testing.assert_array_equal(from_files[i][0], from_dask[i][0])
    assert from_files._cutter.cache.nbytes <= cache_bytes


def test_chunk_cache_keeps_the_most_recent_within_its_budget() -> None:
    from hest_spatialdata.loaders.dataset import ChunkCache

    block = np.zeros((10, 10, 3), np.uint8)  # 300 bytes
    cache = ChunkCache(700)
    for key in ("a", "b", "c"):
        cache.put((key,), block.copy())
    assert cache.get(("a",)) is None and cache.get(("b",)) is not None and cache.nbytes == 600
    cache.put(("d",), block.copy())  # "c" is now the least recently used
    assert cache.get(("c",)) is None and cache.get(("b",)) is not None
    nothing = ChunkCache(0)
    nothing.put(("a",), block)
    assert nothing.get(("a",)) is None and nothing.nbytes == 0
