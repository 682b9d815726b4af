"""Patch embeddings written into the stores, in sopa's layout: :func:`embed`.

Each store gets two elements: the shapes ``{name}_patches`` (the square each embedding saw, centred on its spot,
indexed by the spot barcode) and the table ``{name}_embeddings`` annotating them: ``X`` the embeddings (float32),
obs index the spot barcode, ``obsm["spatial"]`` the spot centres (level-0 px, as sopa's patch centroids) and
``uns["embedding_config"]`` how they were made (sopa's keys ``patch_width``, ``level``, ``model_name`` and ours).
Both are written to a temporary store next to the store, then moved into it (a rename each) and the root's
consolidated metadata is rewritten last: an interrupted run leaves the store as it was, or with the shapes alone,
which the next run replaces.

The spots embedded are, by default, those HEST-Benchmark uses: the spots of HEST's patch file (the store's
``patches`` shapes, indexed by barcode: the spots HEST kept under tissue); :func:`select_spots`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hest_spatialdata._constants import (
    ADDED_KEY,
    ATTRS_KEY,
    REGION_KEY,
    SPOT_INSTANCE_KEY,
    CoordinateSystems,
    Elements,
)
from hest_spatialdata._version import __version__
from hest_spatialdata.benchmark._encoders import Encoder, as_encoder

if TYPE_CHECKING:
    import anndata as ad
    import geopandas as gpd

    from hest_spatialdata.cohort import Cohort, CohortPatchDataset

#: Patches per encoder call by default.
DEFAULT_BATCH_SIZE = 64
#: Which spots are embedded and benchmarked: those of HEST's patch file (the ``patches`` shapes), or all of the table.
SPOT_SETS = ("patches", "all")

log = logging.getLogger(__name__)


def embeddings_table(name: str) -> str:
    """Name of the table of embeddings ``name`` (sopa's ``{model_name}_embeddings``)."""
    return f"{name}_embeddings"


def patches_shapes(name: str) -> str:
    """Name of the shapes element the table of embeddings ``name`` annotates."""
    return f"{name}_patches"


def embed(
    store_or_cohort: str | Path | Iterable[str | Path] | Cohort,
    encoder: Any,
    name: str | None = None,
    patch_size_px: int = 224,
    um_per_px: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    *,
    spots: Literal["patches", "all"] = "patches",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Embed the spots' patches with ``encoder`` and write the embeddings into each store (sopa's layout).

    Parameters
    ----------
    store_or_cohort
        A store, a folder or glob of stores, a list of stores (see :func:`hest_spatialdata.open_cohort`), or a
        :class:`~hest_spatialdata.Cohort`. Local stores only.
    encoder
        A callable ``(B, 3, H, W) float in [0, 1] -> (B, D)`` (torch tensor where torch is installed, else numpy;
        ``name`` required), a torch module, a timm model name, or ``"histogram"`` (a small CPU encoder); see
        :func:`~hest_spatialdata.benchmark.as_encoder`.
    name
        Name of the embeddings: the table ``{name}_embeddings`` annotating the shapes ``{name}_patches``.
    patch_size_px, um_per_px
        The patches (HEST-Benchmark: 224 px at 0.5 µm/px, 112 µm), from the cohort's patch dataset.
    batch_size
        Patches per encoder call.
    device
        torch device for torch and timm encoders (``"cuda"``); ``None``: CPU.
    spots
        ``"patches"``: the spots of HEST's patch file, as HEST-Benchmark (the store's ``patches`` shapes; a store
        without them falls back to all its spots, with a logged warning); ``"all"``: every spot of the table.
        Recorded as ``uns["embedding_config"]["spots"]`` (what was used).
    overwrite
        Replace embeddings of the same name; without it, stores holding them are skipped.
    progress
        Show a progress bar.

    Returns
    -------
    Sample id -> ``"written"`` or ``"skipped"``.

    Raises
    ------
    ValueError
        For an unknown ``spots``, or a store none of whose spots is in its ``patches`` shapes.
    """
    from hest_spatialdata._progress import new_progress

    check_spots(spots)
    cohort = _as_cohort(store_or_cohort)
    model = as_encoder(encoder, name, device)
    table_name = embeddings_table(model.name)
    todo = [s for s in cohort if overwrite or not (cohort.path(s) / "tables" / table_name).is_dir()]
    status = {s: "skipped" for s in cohort if s not in todo}
    if not todo:
        return status
    dataset = cohort.subset(todo).patch_dataset(genes=[], patch_size_px=patch_size_px, um_per_px=um_per_px)
    items = {s: _items(dataset, cohort.path(s), s, spots) for s in todo}
    with new_progress(disable=not progress) as bar:
        task = bar.add_task(f"embedding with {model.name}", total=sum(len(i) for i, _ in items.values()))
        for sample_id in todo:
            indices, used = items[sample_id]
            embeddings = embed_items(dataset, indices, model, batch_size, lambda n: bar.advance(task, n))
            barcodes = dataset.barcodes[indices].astype(str)
            table, shapes = embedding_elements(cohort.path(sample_id), dataset, sample_id, model, barcodes, embeddings)
            table.uns["embedding_config"]["spots"] = used
            write_elements(cohort.path(sample_id), {patches_shapes(model.name): shapes}, {table_name: table})
            status[sample_id] = "written"
    return {s: status[s] for s in cohort}


def select_spots(store: str | Path, barcodes: np.ndarray, spots: str, sample_id: str) -> tuple[np.ndarray, str]:
    """Which of a store's spots ``barcodes`` HEST-Benchmark uses, and the rule applied (``"patches"`` or ``"all"``).

    With ``spots="patches"``, those in the store's ``patches`` shapes (the barcodes of HEST's patch file: HEST
    cuts no patch for a spot off the slide or mostly off tissue, so HEST-Benchmark never sees it); a store without
    that element keeps all, with a logged warning naming the sample. ``spots="all"`` keeps all.

    Returns
    -------
    A boolean mask over ``barcodes``, and ``"patches"`` or ``"all"``.

    Raises
    ------
    ValueError
        If none of ``barcodes`` is in the ``patches`` shapes.
    """
    check_spots(spots)
    patches = patch_barcodes(store) if spots == "patches" else None
    if patches is None:
        if spots == "patches":
            log.warning("sample %s has no %r shapes (HEST's patch file): all its spots are used", sample_id, "patches")
        return np.ones(len(barcodes), dtype=bool), "all"
    keep = np.isin(np.asarray(barcodes).astype(str), patches)
    if not keep.any():
        raise ValueError(f"sample {sample_id}: no spot of its table is in its patches ({Path(store) / 'shapes'})")
    return keep, "patches"


def patch_barcodes(store: str | Path) -> np.ndarray | None:
    """The barcodes of a store's ``patches`` shapes (the index of its Parquet file), ``None`` without the element."""
    folder = Path(store) / "shapes" / Elements.PATCHES.value
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    return np.concatenate([pd.read_parquet(f, columns=[]).index.astype(str).to_numpy() for f in files])


def check_spots(spots: str) -> None:
    """Raise ``ValueError`` unless ``spots`` is one of :data:`SPOT_SETS`."""
    if spots not in SPOT_SETS:
        raise ValueError(f"spots must be one of {', '.join(map(repr, SPOT_SETS))}, got {spots!r}")


def _items(dataset: CohortPatchDataset, store: Path, sample_id: str, spots: str) -> tuple[np.ndarray, str]:
    """The dataset items of ``sample_id`` to embed, and the spot rule applied."""
    indices = dataset.items_of([sample_id])
    keep, used = select_spots(store, dataset.barcodes[indices], spots, sample_id)
    return indices[keep], used


def embed_items(
    dataset: CohortPatchDataset, indices: np.ndarray, encoder: Encoder, batch_size: int, advance: Callable[[int], Any]
) -> np.ndarray:
    """The embeddings (float32) of the dataset items ``indices``, in that order."""
    parts = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        parts.append(encoder(np.stack([dataset[i][0] for i in chunk])))
        advance(len(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def embedding_elements(
    store: Path, dataset: CohortPatchDataset, sample_id: str, encoder: Encoder, barcodes: np.ndarray, x: np.ndarray
) -> tuple[ad.AnnData, gpd.GeoDataFrame]:
    """The table of embeddings and the patch squares it annotates (centred on the spots, level-0 px)."""
    import anndata as ad
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    from hest_spatialdata.storage._parts import read_spot_table
    from hest_spatialdata.storage.store import store_attrs

    pixel_size = float((store_attrs(store) or {})["pixel_size_um"])
    spots = read_spot_table(store)
    ids = pd.Index(np.asarray(spots.obs.get(SPOT_INSTANCE_KEY, spots.obs_names)).astype(str))
    centres = np.asarray(spots.obsm["spatial"], dtype=np.float64)[ids.get_indexer(barcodes)]
    half = dataset.patch_size_px * dataset.um_per_px / pixel_size / 2
    squares = shapely.box(centres[:, 0] - half, centres[:, 1] - half, centres[:, 0] + half, centres[:, 1] + half)
    shapes_name = patches_shapes(encoder.name)
    index = pd.Index(barcodes, dtype=object)
    transformations = {
        CoordinateSystems.GLOBAL.value: Identity(),
        CoordinateSystems.MICRONS.value: Scale([pixel_size] * 2, ("x", "y")),
    }
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=squares, index=index), transformations=transformations)
    obs = pd.DataFrame(
        {REGION_KEY: pd.Categorical([shapes_name] * len(index)), SPOT_INSTANCE_KEY: barcodes}, index=index
    )
    table = TableModel.parse(
        ad.AnnData(X=x, obs=obs), region=shapes_name, region_key=REGION_KEY, instance_key=SPOT_INSTANCE_KEY
    )
    table.obsm["spatial"] = centres
    single = dataset.dataset(sample_id)
    table.uns["embedding_config"] = {
        "patch_width": dataset.patch_size_px,
        "patch_size_px": dataset.patch_size_px,
        "um_per_px": dataset.um_per_px,
        "level": int(single.level),
        "level_um_per_px": float(single.level_um_per_px),
        "model_name": encoder.name,
        "encoder": encoder.name,
        "encoder_kind": encoder.kind,
        "encoder_version": encoder.version,
        "hest_spatialdata_version": __version__,
    }
    return table, shapes


def write_elements(store: Path, shapes: dict[str, Any], tables: dict[str, Any]) -> None:
    """Add (or replace) elements in a local store: written aside, moved in, consolidated metadata last.

    The elements are written by spatialdata to a temporary store next to ``store`` (named as the converter names
    its partial stores, so that either removes those a killed process left); each element folder is then
    renamed into ``store`` (an existing one of the same name is moved aside first and deleted at the end), shapes
    before tables; once all are in place, their names are added to ``attrs["hest"]["added"]`` (so that ``validate``
    tells them from the converter's) and zarr's consolidated metadata of the root is rewritten. Nothing else of the
    store is touched.
    """
    import spatialdata as sd

    from hest_spatialdata.storage.store import PARTIAL_MARK, remove_stale_partials

    store = Path(store)
    remove_stale_partials(store.parent, store.name.removesuffix(".zarr"))  # left by a killed run
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial = store.with_name(f".{store.name}{PARTIAL_MARK}{tag}")
    old = store.with_name(f".{store.name}.old-{tag}")
    moved: list[tuple[str, str]] = []
    try:
        sd.SpatialData(shapes=shapes, tables=tables).write(partial)
        for kind, names in (("shapes", shapes), ("tables", tables)):
            for name in names:
                _move_in(partial / kind, store / kind, name, old / kind)
                moved.append((kind, name))
        _record_added(store, {"shapes": list(shapes), "tables": list(tables)})
        _consolidate(store)
    except BaseException:
        _move_back(store, old, moved)  # the store as it was: new elements out, set-aside ones back
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)  # only once the new elements are in and recorded


def _move_back(store: Path, old: Path, moved: list[tuple[str, str]]) -> None:
    for kind, name in reversed(moved):
        shutil.rmtree(store / kind / name, ignore_errors=True)
        if (old / kind / name).exists():
            (old / kind / name).rename(store / kind / name)
    shutil.rmtree(old, ignore_errors=True)


def _move_in(source: Path, target: Path, name: str, aside: Path) -> None:
    if not target.is_dir():  # the store has no element of this kind yet: the group moves in with it
        source.rename(target)
        return
    if (target / name).exists():
        aside.mkdir(parents=True, exist_ok=True)
        (target / name).rename(aside / name)
    (source / name).rename(target / name)


def _record_added(store: Path, elements: dict[str, list[str]]) -> None:
    """List the elements in ``attrs["hest"]["added"]`` (kind -> names): added after conversion, not from HEST."""
    import zarr

    group = zarr.open_group(zarr.storage.LocalStore(store), mode="r+", use_consolidated=False)
    hest = dict(group.attrs[ATTRS_KEY])
    added = {kind: set(names) for kind, names in (hest.get(ADDED_KEY) or {}).items()}
    for kind, names in elements.items():
        added.setdefault(kind, set()).update(names)
    hest[ADDED_KEY] = {kind: sorted(names) for kind, names in sorted(added.items()) if names}
    group.attrs[ATTRS_KEY] = hest


def _consolidate(store: Path) -> None:
    """Rewrite the root's consolidated metadata (what ``SpatialData.write_consolidated_metadata`` does)."""
    import zarr

    with warnings.catch_warnings():  # parquet files in shapes/ are not zarr nodes: zarr warns about them
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr.storage.LocalStore(store))


def _as_cohort(source: Any) -> Cohort:
    from hest_spatialdata.cohort import Cohort, open_cohort

    return source if isinstance(source, Cohort) else open_cohort(source)
