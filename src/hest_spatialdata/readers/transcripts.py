"""``transcripts/{id}_transcripts.parquet``: the Xenium ``transcripts`` and the ``xenium_cell_table`` made of them.

- The transcripts are the 10x ones plus ``he_x``/``he_y`` (level-0 H&E px). They are read lazily, partition by
  partition; nothing holds all the rows in memory.
- ``xenium_cell_table``: cells x genes counts aggregated from the transcripts, batch by batch into a sparse matrix,
  the way 10x builds ``cell_feature_matrix``: transcripts with ``qv >= 20`` only, genes in ``X`` and the control
  probes and codewords counted per cell in ``obs`` (the columns of 10x's ``cells.csv``). One row per cell of
  ``xenium_cells``, in its order; transcripts assigned to a cell without a boundary are reported, not tabulated.
  (HEST's ``st`` pseudo-spots pool every transcript, low-quality and control ones included, so spot and cell
  totals differ by design.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import dask.dataframe as dd
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
import shapely
from spatialdata.models import PointsModel, TableModel

from hest_spatialdata._constants import REGION_KEY, Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_extent_on_slide, reason, warn
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.spots import valid_var_names
from hest_spatialdata.readers.xenium_seg import (
    CELL_ID_KEY,
    UNASSIGNED,
    as_arrow,
    boundaries,
    cell_id_column,
    cell_id_strings,
)
from hest_spatialdata.roots.remote import RemoteFile
from hest_spatialdata.source.layout import Part

#: 10x counts a transcript in ``cell_feature_matrix`` only from this Phred quality up.
DEFAULT_MIN_QV = 20.0
#: Transcript columns kept next to x, y, ``feature_name`` and ``cell_id``; the 10x µm, DAPI-pixel and FOV columns
#: describe other frames and are left in the source file.
TRANSCRIPT_COLUMNS = ("transcript_id", "overlaps_nucleus", "qv", "z_location", "nucleus_distance")
GENE = "Gene Expression"
#: 10x control features, recognised by name (``codeword_category`` exists only from XOA 3), and the ``cells.csv``
#: column counting them per cell.
CONTROL_PREFIXES = {
    "NegControlProbe_": "Negative Control Probe",
    "antisense_": "Negative Control Probe",
    "NegControlCodeword_": "Negative Control Codeword",
    "BLANK_": "Unassigned Codeword",
    "UnassignedCodeword_": "Unassigned Codeword",
    "DeprecatedCodeword_": "Deprecated Codeword",
    "Intergenic_Region_": "Genomic Control",
}
COUNT_COLUMNS = {
    GENE: "transcript_counts",
    "Negative Control Probe": "control_probe_counts",
    "Negative Control Codeword": "control_codeword_counts",
    "Unassigned Codeword": "unassigned_codeword_counts",
    "Deprecated Codeword": "deprecated_codeword_counts",
    "Genomic Control": "genomic_control_counts",
}
#: Rows per batch when streaming the transcripts with pyarrow.
BATCH_ROWS = 1 << 20
#: Block size of a remote parquet's reads (footer, page headers); column chunks above 4 blocks are read at once.
REMOTE_PARQUET_BLOCK = 1 << 20
_TYPES = list(COUNT_COLUMNS)


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, Any]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``transcripts`` and/or ``xenium_cell_table``.

    The cell table annotates ``xenium_cells``: it is made only where the sample has cell boundaries with cell ids
    (the GeoParquet) and the transcripts have a ``cell_id`` column; otherwise a warning says why it is missing.
    """
    scan = scan_transcripts(path, ctx)
    out: dict[str, Any] = {}
    if Elements.TRANSCRIPTS in elements:
        out[Elements.TRANSCRIPTS.value] = read_transcripts(path, ctx, scan=scan)
    cells_path = ctx.files.get(Part.XENIUM_CELLS) if ctx.files is not None else None
    if Elements.XENIUM_CELL_TABLE in elements and _can_tabulate(cells_path, path, scan, ctx):
        cells = boundaries(cells_path, ctx)
        out[Elements.XENIUM_CELL_TABLE.value] = read_xenium_cell_table(path, cells, ctx, scan=scan)
    return out


def _can_tabulate(cells_path: Path | None, path: Path, scan: TranscriptsScan, ctx: SampleContext) -> bool:
    if cells_path is None:
        return False  # the table annotates xenium_cells: without boundaries there is nothing to annotate
    if cells_path.name.endswith(".zip"):
        warn(ctx, cells_path, "the GeoJSON boundaries carry no cell ids; xenium_cell_table not written")
        return False
    if not scan.has_cell_id:
        warn(ctx, path, "the transcripts have no cell_id column; xenium_cell_table not written")
        return False
    return True


def dictionary_names(column: pa.Array) -> list[str]:
    """The feature names of a dictionary-encoded ``feature_name`` column, decoded once each, nulls left out.

    The column is a batch's read with ``read_dictionary``: its dictionary is the names it uses.
    """
    return [name for name in _strings(column.dictionary).to_pylist() if name is not None]


def _strings(values: Any) -> pa.Array:
    """Feature names as strings (bytes decoded as UTF-8)."""
    arr = as_arrow(values)
    if pa.types.is_dictionary(arr.type):
        return pc.take(_strings(arr.dictionary), arr.indices)
    return pc.cast(arr, pa.string())


def feature_types(names: Iterable[str]) -> np.ndarray:
    """The 10x feature type of each feature name: ``"Gene Expression"`` or a control type (see CONTROL_PREFIXES)."""
    names = list(names)
    types = np.full(len(names), GENE, dtype=object)
    for i, name in enumerate(names):
        for prefix, kind in CONTROL_PREFIXES.items():
            if name.startswith(prefix):
                types[i] = kind
                break
    return types


# --------------------------------------------------------------------------------------------- transcripts


@dataclass(frozen=True)
class TranscriptsScan:
    """What one streaming pass over a transcripts parquet learns: columns, feature names, coordinate range."""

    columns: tuple[str, ...]
    n_rows: int
    categories: pd.Index  # every feature_name, decoded, sorted
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @property
    def has_cell_id(self) -> bool:
        """Whether the transcripts carry a ``cell_id`` column."""
        return CELL_ID_KEY in self.columns


def scan_transcripts(path: str | Path, ctx: SampleContext) -> TranscriptsScan:
    """Stream ``feature_name``, ``he_x`` and ``he_y`` once, batch by batch, and check them.

    Parameters
    ----------
    path
        ``transcripts/{id}_transcripts.parquet``.
    ctx
        The sample's context.

    Returns
    -------
    The feature names (the categories of ``feature_name``) and the coordinate range.

    Raises
    ------
    HestInputError
        If the file is unreadable, lacks a required column, or its coordinates are NaN or off the slide.
    """
    path = path if isinstance(path, RemoteFile) else Path(path)
    pf = _parquet_file(path, ctx)
    columns = tuple(pf.schema_arrow.names)
    missing = [c for c in ("he_x", "he_y", "feature_name") if c not in columns]
    if missing:
        raise HestInputError(ctx.sample_id, path, f"transcripts lack the column(s) {', '.join(missing)}")
    names: set[str] = set()
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["feature_name", "he_x", "he_y"]):
            names.update(dictionary_names(batch.column(0)))
            for axis, column in enumerate((batch.column(1), batch.column(2))):
                nan = pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py()
                if column.null_count or nan:
                    raise HestInputError(ctx.sample_id, path, "transcript coordinates (he_x/he_y) contain NaN")
                bounds = pc.min_max(column)
                lo[axis] = min(lo[axis], bounds["min"].as_py())
                hi[axis] = max(hi[axis], bounds["max"].as_py())
    except (pa.ArrowException, OSError) as e:
        raise HestInputError(ctx.sample_id, path, f"transcripts parquet unreadable or corrupt ({reason(e)})") from e
    if pf.metadata.num_rows:
        check_extent_on_slide(lo, hi, ctx, path, what="transcript coordinates (he_x/he_y)")
    return TranscriptsScan(columns, pf.metadata.num_rows, pd.Index(sorted(names), dtype=str), (lo[0], hi[0]),
                           (lo[1], hi[1]))  # fmt: skip


def read_transcripts(path: str | Path, ctx: SampleContext, *, scan: TranscriptsScan | None = None) -> dd.DataFrame:
    """Read the transcripts as a lazy points element.

    x, y are ``he_x``, ``he_y`` (level-0 H&E px) unchanged; ``feature_name`` is a categorical with known
    categories (bytes decoded); ``cell_id`` (the instance key) is normalised like the shapes' index, unassigned
    transcripts being ``"UNASSIGNED"``. ``transcript_id``, ``overlaps_nucleus``, ``qv``, ``z_location`` and
    ``nucleus_distance`` are kept where present; a WKB ``geometry`` column and the columns of other frames are not.

    Parameters
    ----------
    path, ctx
        ``transcripts/{id}_transcripts.parquet`` and the sample's context.
    scan
        The result of :func:`scan_transcripts` if already computed.

    Returns
    -------
    A dask DataFrame with one partition per parquet row group.
    """
    path = path if isinstance(path, RemoteFile) else Path(path)
    scan = scan or scan_transcripts(path, ctx)
    return lazy_points(path, ("he_x", "he_y"), scan.categories, ctx)


def lazy_points(
    path: Path | RemoteFile,
    xy: tuple[str, str],
    categories: pd.Index,
    ctx: SampleContext,
    affine: np.ndarray | None = None,
) -> dd.DataFrame:
    """A transcripts parquet (HEST's or 10x's) as a lazy points element at (he_x, he_y), a partition per row group.

    Memory is bounded by the file's row groups, whatever its length: each partition reads one, Arrow-backed, so
    that feature names and cell ids never become a Python object per transcript.

    Parameters
    ----------
    path
        The parquet, local or remote.
    xy
        Its coordinate columns: level-0 H&E px as they are (``he_x``, ``he_y``), or mapped by ``affine``.
    categories
        Every feature name (decoded), the categories of ``feature_name``.
    ctx
        The sample's context.
    affine
        A 2 x 3 (or 3 x 3) matrix from ``xy`` to H&E px (a raw Xenium run's µm); ``None``: ``xy`` are H&E px.
    """
    parquet = _parquet_file(path, ctx)
    columns = [c for c in (*xy, "feature_name", CELL_ID_KEY, *TRANSCRIPT_COLUMNS) if c in parquet.schema_arrow.names]
    empty = parquet.schema_arrow.empty_table().select(columns).to_pandas(types_mapper=pd.ArrowDtype)
    if isinstance(path, RemoteFile):
        # one partition per row group, each reading its column chunks by byte ranges (as dask does locally)
        groups = range(parquet.metadata.num_row_groups)
        source = dd.from_map(_RemoteRowGroup(path, columns), groups, meta=empty, enforce_metadata=False)
    else:
        # Arrow-backed columns: the bytes of feature_name / cell_id never become Python objects
        source = dd.read_parquet(path, columns=columns, split_row_groups=True, dtype_backend="pyarrow")
    partition = functools.partial(transcripts_partition, xy=xy, categories=categories, affine=affine)
    return PointsModel.parse(
        source.map_partitions(partition, meta=partition(empty)),
        coordinates={"x": "he_x", "y": "he_y"},
        feature_key="feature_name",
        instance_key=CELL_ID_KEY if CELL_ID_KEY in columns else None,
        transformations=ctx.transformations(),
        sort=True,
    )


def transcripts_partition(
    df: pd.DataFrame, xy: tuple[str, str], categories: pd.Index, affine: np.ndarray | None = None
) -> pd.DataFrame:
    """One partition of a transcripts parquet as the ``transcripts`` element's.

    Columns: he_x, he_y (level-0 px, ``xy`` mapped by ``affine`` where given), feature_name (categorical of
    ``categories``), cell_id (str, Arrow-backed), then the 10x columns present (:data:`TRANSCRIPT_COLUMNS`).
    """
    out = pd.DataFrame(index=df.index)
    x, y = _numpy(df[xy[0]]).astype(np.float64), _numpy(df[xy[1]]).astype(np.float64)
    if affine is not None:
        x, y = affine[0, 0] * x + affine[0, 1] * y + affine[0, 2], affine[1, 0] * x + affine[1, 1] * y + affine[1, 2]
    out["he_x"], out["he_y"] = x, y
    out["feature_name"] = pd.Categorical.from_codes(
        feature_codes(df["feature_name"], categories), dtype=pd.CategoricalDtype(categories)
    )
    if CELL_ID_KEY in df.columns:
        out[CELL_ID_KEY] = cell_id_column(df[CELL_ID_KEY], df.index)
    for column in TRANSCRIPT_COLUMNS:
        if column in df.columns:
            out[column] = _numpy(df[column])
    return out


def _numpy(values: pd.Series) -> np.ndarray:
    """A numeric column as a NumPy array of its own dtype (missing values: NaN, ints then float)."""
    return as_arrow(values).to_numpy(zero_copy_only=False)


def feature_codes(values: Any, categories: pd.Index) -> np.ndarray:
    """Positions of ``values`` (feature names: str, bytes or dictionary-encoded) in ``categories``; -1 where missing.

    Each distinct name is decoded once, not once per transcript.
    """
    arr = as_arrow(values)
    encoded = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    lookup = categories.get_indexer(pd.Index(_strings(encoded.dictionary).to_pylist(), dtype=object))
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(indices < 0, -1, lookup[np.clip(indices, 0, None)]) if len(lookup) else np.full(len(arr), -1)


class _RemoteRowGroup:
    """Reads row group ``i`` of a remote parquet file (the wanted columns only) as an Arrow-backed frame."""

    def __init__(self, path: RemoteFile, columns: list[str]) -> None:
        self.path, self.columns = path, columns

    def __call__(self, group: int) -> pd.DataFrame:
        pf = pq.ParquetFile(self.path.open(block_size=REMOTE_PARQUET_BLOCK), read_dictionary=["feature_name"])
        return pf.read_row_group(group, columns=self.columns).to_pandas(types_mapper=pd.ArrowDtype)


def _parquet_file(path: Path | RemoteFile, ctx: SampleContext) -> pq.ParquetFile:
    if not path.is_file():
        raise HestInputError(ctx.sample_id, path, "transcripts parquet not found")
    try:
        source = path.open(block_size=REMOTE_PARQUET_BLOCK) if isinstance(path, RemoteFile) else path
        return pq.ParquetFile(source, read_dictionary=["feature_name"])
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError ... on truncated files
        raise HestInputError(ctx.sample_id, path, f"transcripts parquet unreadable or truncated ({reason(e)})") from e


# --------------------------------------------------------------------------------------------- cell table


class CellCounter:
    """Counts transcripts per cell, batch by batch, into a sparse cells x genes matrix and per-type totals.

    Parameters
    ----------
    cell_index
        The cell ids (str), one table row each, in this order.
    categories
        Every feature name (decoded).
    min_qv
        Lowest transcript quality counted.
    """

    def __init__(self, cell_index: pd.Index, categories: pd.Index, min_qv: float) -> None:
        kinds = feature_types(categories)
        self.cell_index, self.categories, self.min_qv = cell_index, categories, min_qv
        self.genes = categories[kinds == GENE]
        self.gene_column = np.full(len(kinds), -1)
        self.gene_column[kinds == GENE] = np.arange(len(self.genes))
        self.type_code = np.array([_TYPES.index(k) for k in kinds], dtype=np.int64)
        self.counts = sp.csr_matrix((len(cell_index), len(self.genes)), dtype=np.int32)
        self.per_type = np.zeros((len(cell_index), len(_TYPES)), np.int64)
        self.stats = {"n_transcripts": 0, "n_unassigned": 0, "n_below_min_qv": 0, "n_without_boundary": 0}
        self.cells_without_boundary: set[str] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        """Add one batch of (cell_id, feature_name[, qv]) rows."""
        rows, unassigned = self._rows(batch.column(0))
        features = feature_codes(batch.column(1), self.categories)
        good = _at_least(batch.column(2), self.min_qv) if batch.num_columns > 2 else np.ones(len(rows), bool)
        orphan = (rows < 0) & ~unassigned
        self.stats["n_transcripts"] += len(rows)
        self.stats["n_unassigned"] += int(unassigned.sum())
        self.stats["n_below_min_qv"] += int((~good).sum())
        self.stats["n_without_boundary"] += int(orphan.sum())
        counted = (rows >= 0) & good & (features >= 0)
        rows, features = rows[counted], features[counted]
        n_types = len(_TYPES)
        self.per_type += np.bincount(
            rows * n_types + self.type_code[features], minlength=len(self.cell_index) * n_types
        ).reshape(-1, n_types)
        is_gene = self.gene_column[features] >= 0
        ones = np.ones(int(is_gene.sum()), np.int32)
        coords = (rows[is_gene], self.gene_column[features[is_gene]])
        self.counts = self.counts + sp.coo_matrix((ones, coords), shape=self.counts.shape).tocsr()

    def table(self, cells: gpd.GeoDataFrame, path: Path, ctx: SampleContext) -> ad.AnnData:
        """The ``xenium_cell_table`` of the counts added (see :func:`read_xenium_cell_table`); warns about orphans.

        ``cells`` are the ``xenium_cells`` shapes whose index was given, ``path`` the transcripts' file.
        """
        if self.stats["n_without_boundary"]:
            warn(ctx, path, f"{self.stats['n_without_boundary']} transcripts of {len(self.cells_without_boundary)}"
                  " cells that have no boundary in xenium_cells are left out of xenium_cell_table")  # fmt: skip
        return _cell_table(cells, self, path)

    def _rows(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Table row of each transcript (-1: none) and whether it is unassigned.

        The ids are decoded once per distinct value, not once per transcript.
        """
        encoded = pc.dictionary_encode(as_arrow(ids))
        text = pd.Index(cell_id_strings(encoded.dictionary).to_pylist(), dtype=object)
        indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        row_of = np.append(self.cell_index.get_indexer(text), -1)  # index -1 (a null id) picks the appended -1
        is_unassigned = np.append(np.asarray(text == UNASSIGNED, dtype=bool), True)
        orphans = np.flatnonzero((row_of[:-1] < 0) & ~is_unassigned[:-1])
        self.cells_without_boundary.update(text[np.intersect1d(orphans, indices)])
        return row_of[indices], is_unassigned[indices]


def read_xenium_cell_table(
    path: str | Path,
    cells: gpd.GeoDataFrame,
    ctx: SampleContext,
    *,
    scan: TranscriptsScan | None = None,
    min_qv: float = DEFAULT_MIN_QV,
) -> ad.AnnData:
    """Cell x gene counts from the transcripts, annotating ``xenium_cells``.

    The transcripts are streamed in batches of :data:`BATCH_ROWS` rows and added into a sparse matrix, so peak
    memory grows with the number of (cell, gene) pairs, not of transcripts. As in 10x's ``cell_feature_matrix``,
    only transcripts with ``qv >= min_qv`` count, ``X`` holds the genes, and the control probes and codewords
    are counted per cell in ``obs`` (``control_probe_counts``, ``control_codeword_counts``, ... as in 10x's
    ``cells.csv``, with ``transcript_counts`` for the genes and ``total_counts`` for all).

    Parameters
    ----------
    path
        ``transcripts/{id}_transcripts.parquet``.
    cells
        The ``xenium_cells`` shapes: one table row per cell, in this order (cells without transcripts get zeros).
        Transcripts assigned to cells absent from it are counted in ``uns['xenium_counting']`` and a warning.
    ctx
        The sample's context.
    scan
        The result of :func:`scan_transcripts` if already computed.
    min_qv
        Lowest transcript quality counted; ``0`` counts every transcript, as does a file without ``qv``.

    Returns
    -------
    An AnnData with int32 CSR ``X`` (cells x genes), obs names = cell ids, ``obs['cell_id']`` (instance key),
    ``obs['region'] = "xenium_cells"``, ``obsm['spatial']`` = cell centroids (level-0 px).
    """
    path = path if isinstance(path, RemoteFile) else Path(path)
    scan = scan or scan_transcripts(path, ctx)
    counter = CellCounter(pd.Index(cells.index, dtype=object), scan.categories, min_qv)
    columns = [CELL_ID_KEY, "feature_name"] + (["qv"] if "qv" in scan.columns else [])
    try:
        for batch in _parquet_file(path, ctx).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            counter.add(batch)
    except (pa.ArrowException, OSError) as e:
        raise HestInputError(ctx.sample_id, path, f"transcripts parquet unreadable or corrupt ({reason(e)})") from e
    return counter.table(cells, path, ctx)


def _at_least(qv: pa.Array, min_qv: float) -> np.ndarray:
    values = qv.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values >= min_qv  # NaN (missing quality) is not counted


def _cell_table(cells: gpd.GeoDataFrame, counter: CellCounter, path: Path) -> ad.AnnData:
    ids = np.asarray(cells.index, dtype=object)
    obs = pd.DataFrame(index=pd.Index(ids, dtype=str))
    obs[CELL_ID_KEY] = ids
    obs[REGION_KEY] = pd.Categorical([Elements.XENIUM_CELLS.value] * len(ids))
    for i, kind in enumerate(_TYPES):
        obs[COUNT_COLUMNS[kind]] = counter.per_type[:, i]
    obs["total_counts"] = counter.per_type.sum(axis=1)
    var = pd.DataFrame(index=pd.Index(counter.genes, dtype=str))
    table = ad.AnnData(X=counter.counts, obs=obs, var=var)
    table.var_names = valid_var_names(table.var, table.var_names)
    table.obsm["spatial"] = shapely.get_coordinates(shapely.centroid(cells.geometry.to_numpy()))
    table.uns["xenium_counting"] = {
        "source": path.name,
        "min_qv": float(counter.min_qv),
        "x": "Gene Expression features; control probes and codewords are counted in obs",
        **counter.stats,
        "n_cells_without_boundary": len(counter.cells_without_boundary),
    }
    return TableModel.parse(table, region=Elements.XENIUM_CELLS.value, region_key=REGION_KEY, instance_key=CELL_ID_KEY)


# --------------------------------------------------------------------------------------------- helpers
