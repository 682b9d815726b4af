"""Patch embeddings written into the stores, in sopa's layout: :func:`embed`.

Each store gets two elements: the shapes ``{name}_patches`` (the square each embedding saw, centred on its spot,
indexed by the spot barcode) and the table ``{name}_embeddings`` annotating them: ``X`` the embeddings (float32),
obs index the spot barcode, ``obsm["spatial"]`` the spot centres (level-0 px, as sopa's patch centroids) and
``uns["embedding_config"]`` how they were made (sopa's keys ``patch_width``, ``level``, ``model_name`` and ours).
Both are written to a temporary store next to the store, then moved into it (a rename each) and the root's
consolidated metadata is rewritten last: an interrupted run leaves the store as it was, or (killed between two
renames) with elements outside the consolidated metadata, which the next run replaces.

The loop: a thread reads each store's patches in batches ahead of the encoder (``_reader.py``); the encoder runs in
the calling thread (under ``torch.autocast`` for fp16/bf16), each batch's output is checked
(:func:`checked_embeddings`) and each store is written once all its batches are encoded. A store that fails is a
result of the run's summary, not an exception, until the end (:class:`EmbeddingError`).

The spots embedded are, by default, those HEST-Benchmark uses: the spots of HEST's patch file (the store's
``patches`` shapes, indexed by barcode: the spots HEST kept under tissue); :func:`select_spots`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from functools import partial
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
from hest_spatialdata.benchmark._reader import BatchReader, StoreBatches, StorePlan
from hest_spatialdata.conversion.batch import FailedSamplesError

if TYPE_CHECKING:
    import anndata as ad
    import geopandas as gpd
    from rich.progress import Progress, TaskID

    from hest_spatialdata.cohort import Cohort, CohortPatchDataset
    from hest_spatialdata.conversion.batch import BatchSummary

#: Patches per encoder call by default.
DEFAULT_BATCH_SIZE = 64
#: Which spots are embedded and benchmarked: those of HEST's patch file (the ``patches`` shapes), or all of the table.
SPOT_SETS = ("patches", "all")
#: ``precision`` of :func:`embed`: fp32, or autocast to float16 / bfloat16.
PRECISIONS = ("fp32", "fp16", "bf16")

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
    precision: Literal["fp32", "fp16", "bf16"] = "fp32",
    spots: Literal["patches", "all"] = "patches",
    overwrite: bool = False,
    progress: bool = True,
    raise_on_failure: bool = True,
) -> BatchSummary:
    """Embed the spots' patches with ``encoder`` and write the embeddings into each store (sopa's layout).

    A thread reads the patches ahead of the encoder (:mod:`~hest_spatialdata.benchmark._reader`: a bounded queue
    of ready batches, pinned memory on CUDA), so that reading overlaps encoding; the embeddings are those of
    reading and encoding one batch after the other, row for row. One progress bar covers the whole cohort. A store
    that fails (it cannot be read, the encoder raises or returns bad embeddings: see :func:`checked_embeddings`)
    gets nothing written and the others go on; the summary says which and why. Each store receives its
    embeddings complete or not at all (:func:`write_elements`), so an interrupted run (Ctrl-C, a crash) is
    finished by running it again: stores that hold complete embeddings of that name and configuration are
    skipped.

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
    precision
        ``"fp32"``, or the encoder run under ``torch.autocast`` in ``"fp16"`` or ``"bf16"`` (CUDA; on CPU ``"bf16"``
        only, which pays where the CPU has bfloat16 instructions). Not for the numpy ``histogram`` encoder.
        Recorded as ``uns["embedding_config"]["precision"]``.
    spots
        ``"patches"``: the spots of HEST's patch file, as HEST-Benchmark (the store's ``patches`` shapes; a store
        without them falls back to all its spots, with a logged warning); ``"all"``: every spot of the table.
        Recorded as ``uns["embedding_config"]["spots"]`` (what was used).
    overwrite
        Replace embeddings of the same name; without it, stores holding complete ones of this configuration are
        skipped, and stores holding ones of another configuration fail (the reason says what differs).
    progress
        Show a progress bar (patches/s and time remaining).
    raise_on_failure
        Raise :class:`EmbeddingError` at the end if any store failed (the others are written first).

    Returns
    -------
    The summary (:class:`~hest_spatialdata.conversion.batch.BatchSummary`): one result per store, ``done``,
    ``skipped`` or ``failed`` with the reason.

    Raises
    ------
    EmbeddingError
        If a store failed and ``raise_on_failure``.
    ValueError
        For an unknown ``spots`` or ``precision``, or a precision the encoder or device cannot run.
    """
    from hest_spatialdata._progress import new_progress
    from hest_spatialdata.conversion.batch import BatchSummary, SampleResult

    check_spots(spots)
    cohort = _as_cohort(store_or_cohort)
    model = as_encoder(encoder, name, device)
    autocast = precision_context(model, device, precision)
    config = {"patch_size_px": int(patch_size_px), "um_per_px": float(um_per_px), "spots_asked": spots,
              "precision": precision}  # fmt: skip
    for key in ("weights_sha256", "config_sha256"):  # other weights (or config) under one name: other embeddings
        if model.config.get(key):
            config[key] = model.config[key]
    summary, started = BatchSummary(), time.perf_counter()
    todo = []
    for sample_id in cohort:
        held = None if overwrite else held_embeddings(cohort.path(sample_id), model.name, config)
        if held is None:
            todo.append(sample_id)
        else:
            status, reason = held
            summary.results.append(SampleResult(sample_id, status, reason, store=str(cohort.path(sample_id))))
    run = _Run(model, autocast, config)
    with new_progress(disable=not progress, rate_unit="patches") as bar:
        expected = {s: int(np.nan_to_num(cohort.table.at[s, "n_spots"])) for s in todo}
        task = bar.add_task(f"embedding with {model.name}", total=sum(expected.values()))
        opener = partial(_plan, cohort, patch_size_px=patch_size_px, um_per_px=um_per_px, spots=spots)
        with BatchReader(todo, opener, batch_size, prepare=model.prepare) as reader:
            for store in reader.stores():
                summary.results.append(run.store(cohort.path(store.sample_id), store, bar, task, expected))
    summary.seconds = time.perf_counter() - started
    summary.results.sort(key=lambda r: cohort.sample_ids.index(r.sample_id))
    if raise_on_failure and not summary.ok:
        raise EmbeddingError(summary)
    return summary


class EmbeddingError(FailedSamplesError):
    """Some stores failed; the others were written. ``summary`` says which and why.

    Parameters
    ----------
    summary
        The summary of the run.
    """

    items = "stores"


class EncoderOutputError(ValueError):
    """An encoder's output is not one finite embedding of a fixed dimension per patch."""


class _Run:
    """One ``embed`` run over its stores: the encoder, its precision, and the dimension its first batch gave."""

    def __init__(self, encoder: Encoder, autocast: Callable[[], AbstractContextManager[Any]], config: dict) -> None:
        self.encoder, self.autocast, self.config = encoder, autocast, config
        self.dims: list[int] = []

    def store(self, path: Path, store: StoreBatches, bar: Progress, task: TaskID, expected: dict[str, int]) -> Any:
        """Embed and write one store; a failure is its result (with the reason), not an exception."""
        from hest_spatialdata.conversion.batch import SampleResult

        sample_id, started, done = store.sample_id, time.perf_counter(), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            bar.advance(task, n)

        total = expected[sample_id]
        try:
            if store.error is not None:
                raise store.error
            assert store.plan is not None
            total = len(store.plan.indices)
            bar.update(task, total=bar.tasks[task].total + total - expected[sample_id])
            x = self.embeddings(path, store, advance)
            info = store.plan.info
            table, shapes = embedding_elements(path, self.encoder, info["barcodes"], x, self.config | info["config"])
            write_elements(path, {patches_shapes(self.encoder.name): shapes},
                           {embeddings_table(self.encoder.name): table})  # fmt: skip
        except Exception as e:  # the store's result; the next store goes on
            bar.update(task, total=bar.tasks[task].total - (total - done))
            log.debug("sample %s failed", sample_id, exc_info=True)
            reason = str(e) if isinstance(e, EncoderOutputError) else f"{type(e).__name__}: {e}"
            return SampleResult(sample_id, "failed", reason, store=str(path), seconds=time.perf_counter() - started)
        return SampleResult(sample_id, "done", store=str(path), seconds=time.perf_counter() - started)

    def embeddings(self, path: Path, store: StoreBatches, advance: Callable[[int], Any]) -> np.ndarray:
        """The embeddings of one store's batches, in order, each checked (:func:`checked_embeddings`)."""
        where = f"encoder {self.encoder.name!r} on sample {store.sample_id} ({path})"
        parts = []
        for n, batch in store.batches():
            try:
                with self.autocast():
                    out = self.encoder.forward(batch)
            except Exception as e:
                raise EncoderOutputError(f"{where} raised {type(e).__name__}: {e}") from e
            parts.append(checked_embeddings(out, n, where, self.dims, self.encoder.embedding_dim))
            advance(n)
        if not parts:
            raise EncoderOutputError(f"{where}: no patch to embed")
        return np.concatenate(parts)


def checked_embeddings(out: Any, n: int, where: str, dims: list[int], known_dim: int | None = None) -> np.ndarray:
    """``out`` as (n, D) float32, or :class:`EncoderOutputError` naming ``where`` (the encoder and the store).

    An encoder must return one embedding per patch, ``(B, D)``, finite, with the same ``D`` for every batch of the
    run (``dims`` holds the first batch's; empty before it) and ``known_dim`` where its dimension is known.
    """
    try:
        x = np.asarray(out.detach().float().cpu().numpy() if hasattr(out, "detach") else out)
    except Exception as e:
        raise EncoderOutputError(f"{where} returned {type(out).__name__}, not an array: {e}") from e
    if x.ndim != 2 or x.shape[0] != n:
        raise EncoderOutputError(f"{where} returned shape {x.shape} for a batch of {n} patches: it must be (B, D)")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise EncoderOutputError(f"{where} returned {x.dtype} embeddings, not real numbers")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as an Inf
        x = x.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
    if bad:
        raise EncoderOutputError(f"{where} returned NaN or Inf in {bad} of {n} embeddings (in float32)")
    if dims and x.shape[1] != dims[0]:
        raise EncoderOutputError(f"{where} returned D={x.shape[1]} after D={dims[0]}: D must not change")
    if known_dim and x.shape[1] != known_dim:
        raise EncoderOutputError(f"{where} returned D={x.shape[1]}, not its documented D={known_dim}")
    dims[:] = dims or [x.shape[1]]
    return x


def precision_context(
    encoder: Encoder, device: str | None, precision: str
) -> Callable[[], AbstractContextManager[Any]]:
    """What each encoder call runs under: nothing for fp32, else ``torch.autocast`` on the device's type.

    Raises
    ------
    ValueError
        For an unknown precision, fp16 on CPU (autocast's CPU float16 is slower than fp32 on most CPUs), or a
        reduced precision for a numpy-only (built-in) encoder.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext
    if encoder.kind == "builtin":
        raise ValueError(f"encoder {encoder.name!r} is numpy only: precision {precision!r} needs a torch encoder")
    import torch

    device_type = torch.device(device or "cpu").type
    if device_type == "cpu" and precision == "fp16":
        raise ValueError("precision 'fp16' runs on CUDA only; on CPU use 'bf16' (or 'fp32')")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return partial(torch.autocast, device_type, dtype=dtype)


def held_embeddings(store: Path, name: str, config: dict[str, Any]) -> tuple[str, str] | None:
    """Whether a store holds complete embeddings ``name``: ``None`` if not, else ``(status, reason)`` of the store.

    Complete: the table is in the root's consolidated metadata (the last step of :func:`write_elements`). Those
    made with the same ``config`` (patch size, resolution, spots asked, precision; a key an older run did not record
    is not compared) are ``skipped``; others ``failed``, the reason naming what differs.
    """
    table = embeddings_table(name)
    if not (Path(store) / "tables" / table).is_dir() or f"tables/{table}" not in _consolidated_nodes(store):
        return None
    held = read_embedding_config(store, name)
    differs = [f"{key} {held[key]!r}, not {value!r}" for key, value in config.items()
               if key in held and held[key] != value]  # fmt: skip
    if differs:
        return "failed", (f"holds embeddings {name!r} made otherwise ({', '.join(differs)}): --overwrite replaces "
                          "them, or choose another name")  # fmt: skip
    return "skipped", f"holds embeddings {name!r} (--overwrite replaces them)"


def read_embedding_config(store: str | Path, name: str) -> dict[str, Any]:
    """``uns["embedding_config"]`` of the embeddings ``name`` of a store, read with anndata (plain Python values)."""
    import anndata as ad
    import zarr

    group = zarr.open_group(zarr.storage.LocalStore(Path(store) / "tables" / embeddings_table(name)), mode="r")
    if "uns" not in group or "embedding_config" not in group["uns"]:
        return {}
    config = ad.io.read_elem(group["uns"]["embedding_config"])
    return {key: value.item() if isinstance(value, np.generic | np.ndarray) else value for key, value in config.items()}


def _plain(value: Any) -> Any:
    """``value`` as what anndata writes into ``uns``: dicts (without ``None``), lists, str, int, float, bool."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    for kind in (bool, int, float, str):  # subclasses (torch's TorchVersion is a str) as the plain type
        if isinstance(value, kind):
            return kind(value)
    return str(value)


def _consolidated_nodes(store: str | Path) -> set[str]:
    root = json.loads((Path(store) / "zarr.json").read_text(encoding="utf-8"))
    return set((root.get("consolidated_metadata") or {}).get("metadata") or {})


def _plan(cohort: Cohort, sample_id: str, *, patch_size_px: int, um_per_px: float, spots: str) -> StorePlan:
    """Open one store for the reader (in its thread): its patch dataset, the items to embed and their config."""
    dataset = cohort.subset([sample_id]).patch_dataset(genes=[], patch_size_px=patch_size_px, um_per_px=um_per_px)
    indices, used = _items(dataset, cohort.path(sample_id), sample_id, spots)
    single = dataset.dataset(sample_id)
    config = {"spots": used, "level": int(single.level), "level_um_per_px": float(single.level_um_per_px)}
    return StorePlan(dataset, indices, {"barcodes": dataset.barcodes[indices].astype(str), "config": config})


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


def embedding_elements(
    store: Path, encoder: Encoder, barcodes: np.ndarray, x: np.ndarray, config: dict[str, Any]
) -> tuple[ad.AnnData, gpd.GeoDataFrame]:
    """The table of embeddings and the patch squares it annotates (centred on the spots, level-0 px).

    ``config``: ``patch_size_px``, ``um_per_px``, ``level``, ``level_um_per_px``, ``spots`` and the run's other
    settings, recorded in ``uns["embedding_config"]`` with the encoder's name, kind and version.
    """
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
    half = config["patch_size_px"] * config["um_per_px"] / pixel_size / 2
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
    table.uns["embedding_config"] = {
        "patch_width": config["patch_size_px"],
        **config,
        "model_name": encoder.name,
        "encoder": encoder.name,
        "encoder_kind": encoder.kind,
        "encoder_version": encoder.version,
        "hest_spatialdata_version": __version__,
    }
    if encoder.config:  # what produced them (registry and timm encoders); anndata writes no None
        table.uns["embedding_config"]["encoder_config"] = _plain(encoder.config)
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
    root = (store / "zarr.json").read_bytes()
    try:
        sd.SpatialData(shapes=shapes, tables=tables).write(partial)
        for kind, names in (("shapes", shapes), ("tables", tables)):
            for name in names:
                _move_in(partial / kind, store / kind, name, old / kind)
                moved.append((kind, name))
        _record_added(store, {"shapes": list(shapes), "tables": list(tables)})
        _consolidate(store)
    except BaseException:
        _move_back(store, old, moved)  # the store as it was: new elements out, set-aside ones back, its root's
        _write_atomically(store / "zarr.json", root)  # attributes and consolidated metadata as they were
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)  # only once the new elements are in and recorded


def _write_atomically(path: Path, data: bytes) -> None:
    if path.read_bytes() != data:
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        aside.write_bytes(data)
        aside.replace(path)


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
