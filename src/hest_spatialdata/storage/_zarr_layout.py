"""The zarr array layouts this package reads and writes as plain files, without zarr-python's machinery.

The raster levels of our stores are zarr v3 arrays with a regular chunk grid, ``default`` chunk keys and codecs
``bytes`` + ``zstd`` (:func:`plain_zstd_layout`); the image levels are besides uint8, ``(c, y, x)`` with every
channel in one chunk (:func:`simple_layout`). For those layouts the writers (:class:`hest_spatialdata.writer.image.
ChunkFiles`, images and labels) and the patch loaders (:class:`hest_spatialdata.loaders._zarr_chunks.RawChunks`, images)
handle chunk files themselves, as the zarr v3 specification defines them; any other layout goes through zarr. Light
on purpose: a slide-only conversion imports it without pandas.
"""

from __future__ import annotations

from typing import Any

#: The only codec chain handled as plain files (the one ``store.DEFAULT_RASTER_COMPRESSOR`` writes).
RAW_CODECS = ("bytes", "zstd")


def plain_zstd_layout(meta: dict[str, Any]) -> bool:
    """Whether an array's metadata (its ``zarr.json``, or ``zarr.Array.metadata.to_dict()``) is a plain zstd array.

    That is a regular grid of ``default`` chunk keys, each chunk its C-order little-endian bytes compressed by zstd;
    any dtype and rank.
    """
    codecs = meta.get("codecs", ())
    return (
        meta.get("zarr_format") == 3
        and meta.get("node_type") == "array"
        and meta.get("chunk_grid", {}).get("name") == "regular"
        and meta.get("chunk_key_encoding", {}).get("name") == "default"
        and tuple(codec.get("name") for codec in codecs) == RAW_CODECS
        and (codecs[0].get("configuration") or {}).get("endian", "little") == "little"
        and not meta.get("storage_transformers")
    )


def simple_layout(meta: dict[str, Any]) -> bool:
    """Whether an array's metadata has the layout of our image levels.

    That is :func:`plain_zstd_layout`, uint8, ``(c, y, x)`` with every channel in one chunk.
    """
    return (
        plain_zstd_layout(meta)
        and meta.get("data_type") == "uint8"
        and len(meta.get("shape", ())) == 3
        and meta["chunk_grid"]["configuration"]["chunk_shape"][0] == meta["shape"][0]
    )
