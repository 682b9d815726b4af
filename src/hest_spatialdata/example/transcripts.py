"""The transcripts of the Xenium example: one per count of the real cell x feature matrix, as HEST's parquet.

Every count of the real matrix (genes and control probes/codewords) becomes one transcript placed inside its
cell with ``qv >= 20``, so 10x's counting rule gives back the real matrix; low-quality copies and unassigned
transcripts near the cells come on top. Columns, types and id dictionaries follow HEST's
``transcripts/{id}_transcripts.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from hest_spatialdata.example.sources import xenium_mouse_brain, xenium_mouse_brain_features

if TYPE_CHECKING:
    from hest_spatialdata.example.common import VisiumLayout
    from hest_spatialdata.example.xenium_cells import CellIdType, XeniumSampleCells

XENIUM_UNASSIGNED = "UNASSIGNED"
_TRANSCRIPT_ID_BASE = 281474976710656  # real 10x transcript ids are large uint64s


class TranscriptWriter:
    """Writes the transcripts parquet chunk by chunk and keeps what the pseudo-spot pooling needs."""

    def __init__(
        self,
        path: Path,
        cells: XeniumSampleCells,
        *,
        id_type: CellIdType,
        geometry: bool,
        row_group_size: int,
        hest_columns: bool = True,
    ):
        import pyarrow as pa

        self.path, self.geometry, self.row_group_size = path, geometry, row_group_size
        # HEST adds he_x/he_y/dapi_x/dapi_y to the 10x columns; a raw Xenium bundle has only the 10x ones
        self.hest_columns = hest_columns
        names = list(xenium_mouse_brain_features().names)
        unassigned: Any = {"int": -1, "str": XENIUM_UNASSIGNED, "bytes": XENIUM_UNASSIGNED.encode()}[id_type]
        # 10x/HEST transcripts of XOA 1.x carry bytes feature names; ids and names are taken from small dictionaries
        as_bytes = id_type != "str"
        self.features = pa.array([n.encode() for n in names] if as_bytes else names)
        self.ids = pa.array([*cells.ids.tolist(), unassigned], type=pa.binary() if id_type == "bytes" else None)
        self.fovs = pa.array([f"{chr(65 + r)}{c + 1}" for r in range(26) for c in range(100)])
        self.writer: Any = None
        self.n_rows = 0
        self.he: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []

    def write(self, columns: dict[str, np.ndarray], owner: np.ndarray, codes: np.ndarray) -> None:
        """Append transcripts: ``owner`` is the cell position (-1: unassigned), ``codes`` the feature position."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(codes)
        table = {
            "transcript_id": pa.array(_TRANSCRIPT_ID_BASE + self.n_rows + np.arange(n, dtype=np.uint64)),
            "cell_id": self.ids.take(pa.array(np.where(owner < 0, len(self.ids) - 1, owner))),
            "overlaps_nucleus": columns["overlaps_nucleus"],
            "feature_name": self.features.take(pa.array(codes)),
            "x_location": columns["x_location"],
            "y_location": columns["y_location"],
            "z_location": columns["z_location"],
            "qv": columns["qv"],
            "fov_name": self.fovs.take(pa.array(np.clip(columns["fov"], 0, len(self.fovs) - 1))),
            "nucleus_distance": columns["nucleus_distance"],
            **({k: columns[k] for k in ("he_x", "he_y", "dapi_x", "dapi_y")} if self.hest_columns else {}),
        }
        if self.geometry:
            table["geometry"] = pa.array(shapely.to_wkb(shapely.points(columns["he_x"], columns["he_y"])), pa.binary())
        batch = pa.table(table)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, batch.schema)
        self.writer.write_table(batch, row_group_size=self.row_group_size)
        self.n_rows += n
        self.he.append(np.column_stack([columns["he_x"], columns["he_y"]]))
        self.codes.append(np.asarray(codes, dtype=np.int32))

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        """Finish the file; returns every (he_x, he_y) and feature position, in file order."""
        self.writer.close()
        return np.concatenate(self.he), np.concatenate(self.codes)


def _place_in_cells(
    cells: XeniumSampleCells, owner: np.ndarray, layout: VisiumLayout, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Transcript columns for transcripts of the given cells (``owner``: cell positions), each inside its cell."""
    k = cells.vertices.shape[1]
    side = rng.integers(k, size=len(owner))
    u, v = rng.random(len(owner)), rng.random(len(owner))
    fold = u + v > 1
    u[fold], v[fold] = 1 - u[fold], 1 - v[fold]
    centre = cells.centres[owner]
    a = cells.vertices[owner, side] - centre
    b = cells.vertices[owner, (side + 1) % k] - centre
    xy = centre + u[:, None] * a + v[:, None] * b  # uniform in one fan triangle of the star polygon
    depth = u + v  # the nucleus (cell scaled by f) holds exactly the points with depth <= f
    scale = cells.nucleus_scale[owner]
    outside = np.clip(1 - scale / np.maximum(depth, 1e-9), 0, None)
    distance = outside * np.linalg.norm(xy - centre, axis=1) * layout.pixel_size_um
    columns = _location_columns(xy, layout, rng)
    columns["overlaps_nucleus"] = (depth <= scale).astype(np.uint8)
    columns["nucleus_distance"] = distance.astype(np.float32)
    return columns


def _location_columns(xy: np.ndarray, layout: VisiumLayout, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ps = layout.pixel_size_um
    morph = xenium_mouse_brain().experiment["pixel_size"]
    x_um = (xy[:, 0] * ps + layout.origin_um[0]).astype(np.float32)
    y_um = (xy[:, 1] * ps + layout.origin_um[1]).astype(np.float32)
    return {
        "x_location": x_um,
        "y_location": y_um,
        "z_location": rng.uniform(6, 16, len(xy)).astype(np.float32),
        "fov": (y_um // 400).astype(np.int64) * 100 + (x_um // 400).astype(np.int64),
        # HEST: he_x = aligned µm / pixel size; dapi_x = µm / morphology pixel size
        "he_x": (x_um.astype(np.float64) - layout.origin_um[0]) / ps,
        "he_y": (y_um.astype(np.float64) - layout.origin_um[1]) / ps,
        "dapi_x": x_um.astype(np.float64) / morph,
        "dapi_y": y_um.astype(np.float64) / morph,
    }


def _good_qv(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(n) < 0.75, 40.0, rng.uniform(20, 40, n)).astype(np.float32)


def write_cell_chunk(
    writer: TranscriptWriter,
    cells: XeniumSampleCells,
    chunk: np.ndarray,
    layout: VisiumLayout,
    rng: np.random.Generator,
    *,
    unassigned_fraction: float,
    low_qv_fraction: float,
) -> None:
    """Write the transcripts of the cells ``chunk``: one per real count, plus low-quality and unassigned ones.

    Parameters
    ----------
    writer
        The transcripts parquet being written.
    cells
        The cells of the sample.
    chunk
        Positions of the cells in ``cells``.
    layout
        The slide layout.
    rng
        Random generator (shared by the chunks, so the file depends on the chunking).
    unassigned_fraction, low_qv_fraction
        Extra transcripts, relative to the counted ones.
    """
    counts = xenium_mouse_brain_features().counts[cells.rows[chunk]].tocoo()
    owner = chunk[np.repeat(counts.row, counts.data)]
    codes = np.repeat(counts.col, counts.data).astype(np.int64)
    extra = rng.choice(len(owner), size=round(low_qv_fraction * len(owner)), replace=True)
    owner, codes = np.concatenate([owner, owner[extra]]), np.concatenate([codes, codes[extra]])
    qv = np.concatenate([_good_qv(len(owner) - len(extra), rng), rng.uniform(0, 19.5, len(extra)).astype(np.float32)])
    columns = _place_in_cells(cells, owner, layout, rng)
    n_free = round(unassigned_fraction * len(owner))
    if n_free:
        free, free_codes = _unassigned(cells, chunk, n_free, layout, rng)
        columns = {k: np.concatenate([v, free[k]]) for k, v in columns.items()}
        owner = np.concatenate([owner, np.full(n_free, -1)])
        codes = np.concatenate([codes, free_codes])
        qv = np.concatenate([qv, _good_qv(n_free, rng)])
    order = rng.permutation(len(codes))  # 10x files are ordered by FOV, not by cell
    columns = {k: v[order] for k, v in columns.items()}
    columns["qv"] = qv[order]
    writer.write(columns, owner[order], codes[order])


def _unassigned(
    cells: XeniumSampleCells, chunk: np.ndarray, n: int, layout: VisiumLayout, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Transcripts outside cells, scattered around them, with features drawn from the run's feature totals."""
    near = rng.choice(chunk, size=n)
    spread = np.sqrt(xenium_mouse_brain().cells["cell_area"].mean() / np.pi) / layout.pixel_size_um
    xy = np.clip(cells.centres[near] + rng.normal(0, 1.5 * spread, (n, 2)), 0, [layout.width - 1, layout.height - 1])
    columns = _location_columns(xy, layout, rng)
    columns["overlaps_nucleus"] = np.zeros(n, np.uint8)
    distance = np.linalg.norm(xy - cells.centres[near], axis=1) * layout.pixel_size_um
    columns["nucleus_distance"] = distance.astype(np.float32)
    totals = np.asarray(xenium_mouse_brain_features().counts.sum(axis=0)).ravel()
    return columns, rng.choice(len(totals), size=n, p=totals / totals.sum())
