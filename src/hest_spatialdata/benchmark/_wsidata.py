"""The embeddings as LazySlide / wsidata read features: :func:`wsidata_tile_spec`, the one thing they lack.

wsidata (``WSIData``, LazySlide's data structure) keeps tiles as shapes, features as a table, and each tile set's
``TileSpec`` in ``attrs["tile_spec"][tile_key]`` (``wsidata/_model/core.py``, ``_model/tile.py``). The stores
already hold the first two, in sopa's layout (shapes ``{name}_patches``, table ``{name}_embeddings``); the tile
spec follows from the table's ``uns["embedding_config"]`` and the store's pixel size, so it is computed, not
stored (``docs/benchmark.md`` section 2 gives the bridge, no copy of the data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hest_spatialdata.benchmark._embed import embeddings_table


def wsidata_tile_spec(store: str | Path, name: str) -> dict[str, Any]:
    """The ``TileSpec`` of wsidata (as its ``to_dict``) for the patches of the embeddings ``name`` of a local store.

    The patch is ``patch_size_px`` square at ``um_per_px`` (wsidata's ``mpp``), cut from pyramid level ``level``
    (``ops_level``, ``ops_downsample`` its pixels per patch pixel), ``base_downsample`` level-0 pixels per patch
    pixel (so that ``base_height`` is the side of the ``{name}_patches`` squares); the patches are centred on the
    spots, not a grid: the stride is the patch.

    Raises
    ------
    KeyError
        If the store holds no such embeddings.
    """
    import anndata as ad
    import zarr

    from hest_spatialdata._constants import ATTRS_KEY

    root = Path(store)
    element = root / "tables" / embeddings_table(name)
    if not element.is_dir():
        raise KeyError(f"{root} has no embeddings {name!r} ({element})")
    table = zarr.open_group(zarr.storage.LocalStore(element), mode="r", use_consolidated=False)
    config = ad.io.read_elem(table["uns"]["embedding_config"])
    pixel_size = float(zarr.open_group(zarr.storage.LocalStore(root), mode="r").attrs[ATTRS_KEY]["pixel_size_um"])
    size, um_per_px = int(config["patch_size_px"]), float(config["um_per_px"])
    return {
        "height": size, "width": size, "stride_height": size, "stride_width": size, "mpp": um_per_px,
        "ops_level": int(config["level"]), "ops_downsample": um_per_px / float(config["level_um_per_px"]),
        "base_level": 0, "base_downsample": um_per_px / pixel_size, "tissue_name": None,
    }  # fmt: skip
