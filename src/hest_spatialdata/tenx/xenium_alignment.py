"""The H&E alignment of a Xenium run (Xenium Explorer's export) and the warp of Xenium µm onto the H&E.

Xenium Explorer's "Image alignment" exports ``{name}_imagealignment.csv``: a 3 x 3 affine matrix, no header,
that maps **H&E pixel** coordinates to **Xenium morphology-image pixel** coordinates (0.2125 µm per px,
``experiment.xenium``'s ``pixel_size``); 10x knowledge base "How can I convert coordinates between H&E image and
Xenium data". Xenium Explorer >= 2.0 may export the keypoints instead (columns ``fixedX, fixedY, alignmentX,
alignmentY``). Both are read as HEST reads them (mahmoodlab/HEST ``src/hest/utils.py`` @ afd42c3):

- ``read_xenium_alignment``: the matrix as it is; for keypoints, the affine through the first three points from
  ``alignmentX/Y`` (the H&E) to ``fixedX/Y`` (Xenium), as ``cv2.getAffineTransform`` (solved here with NumPy: three
  point pairs determine it exactly);
- ``align_xenium_df``: the translation is multiplied by the morphology pixel size, the matrix inverted and applied
  to the µm positions, the result divided by the pixel size: H&E px = inv(M_um) @ (x_um, y_um, 1) / pixel_size;
- ``XeniumReader.__xenium_estimate_pixel_size``: the H&E pixel size is the morphology pixel size times the length of
  the image of a unit step along the H&E's y axis: ``pixel_size * |M @ (0, 1, 1) - M @ (0, 0, 1)|``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import reason

_KEYPOINT_COLUMNS = ("fixedX", "fixedY", "alignmentX", "alignmentY")


def read_alignment(path: str | Path, sample_id: str | None = None) -> np.ndarray:
    """Read a Xenium Explorer alignment CSV as the 3 x 3 affine matrix from H&E px to Xenium morphology px.

    Parameters
    ----------
    path
        The ``*_imagealignment.csv`` (3 rows of 3 numbers) or a keypoints CSV (``fixedX, fixedY, alignmentX,
        alignmentY``, at least 3 rows).
    sample_id
        For the error message.

    Returns
    -------
    The (3, 3) float64 matrix.

    Raises
    ------
    HestInputError
        If the file is missing, unreadable, not of either form, or the affine is not invertible.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise HestInputError(sample_id, path, f"alignment CSV unreadable ({reason(e)})") from e
    if rows and "fixedX" in [cell.strip() for cell in rows[0]]:
        matrix = _keypoints_affine(rows, path, sample_id)
    else:
        matrix = _matrix_rows(rows, path, sample_id)
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise HestInputError(sample_id, path, "the alignment matrix is not an invertible affine transform")
    return matrix


def _matrix_rows(rows: list[list[str]], path: Path, sample_id: str | None) -> np.ndarray:
    try:
        matrix = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as e:
        raise HestInputError(sample_id, path, f"alignment CSV holds text that is not a number ({reason(e)})") from e
    if matrix.shape != (3, 3):
        raise HestInputError(sample_id, path, f"an alignment matrix has 3 rows of 3 numbers, found {len(rows)} rows "
                             f"({', '.join(str(len(r)) for r in rows)} values); is it Xenium Explorer's "
                             "*_imagealignment.csv?")  # fmt: skip
    if not np.allclose(matrix[2], [0, 0, 1]):
        raise HestInputError(sample_id, path, f"the alignment matrix's last row is {matrix[2].tolist()}, not [0, 0, 1]")
    return matrix


def _keypoints_affine(rows: list[list[str]], path: Path, sample_id: str | None) -> np.ndarray:
    header = [cell.strip() for cell in rows[0]]
    missing = [c for c in _KEYPOINT_COLUMNS if c not in header]
    if missing or len(rows) < 4:
        raise HestInputError(sample_id, path, "a keypoints CSV needs the columns fixedX, fixedY, alignmentX, "
                             "alignmentY and at least 3 keypoints")  # fmt: skip
    try:
        points = np.array([[float(row[header.index(c)]) for c in _KEYPOINT_COLUMNS] for row in rows[1:4]])
    except (ValueError, IndexError) as e:
        raise HestInputError(sample_id, path, f"keypoints unreadable ({reason(e)})") from e
    source = np.column_stack([points[:, 2:], np.ones(3)])  # H&E (alignment) points, homogeneous
    try:
        affine = np.linalg.solve(source, points[:, :2]).T  # (2, 3): source -> fixed, as cv2.getAffineTransform
    except np.linalg.LinAlgError as e:
        raise HestInputError(sample_id, path, "the first three keypoints are collinear: no affine") from e
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def he_pixel_size_um(matrix: np.ndarray, morphology_pixel_size_um: float) -> float:
    """HEST's H&E pixel size for a Xenium sample: the morphology pixel size times the matrix's scale along y.

    Parameters
    ----------
    matrix
        The alignment, H&E px -> morphology px.
    morphology_pixel_size_um
        ``experiment.xenium``'s ``pixel_size`` (0.2125 µm).

    Returns
    -------
    µm per level-0 H&E pixel (``pixel_size_um_estimated``).
    """
    ends = matrix @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).T
    return float(morphology_pixel_size_um * np.hypot(*(ends[:2, 0] - ends[:2, 1])))


@dataclass(frozen=True)
class XeniumToHE:
    """The warp of Xenium µm positions onto level-0 H&E px (HEST's ``align_xenium_df``).

    Parameters
    ----------
    matrix
        The alignment, H&E px -> morphology px (:func:`read_alignment`).
    morphology_pixel_size_um
        ``experiment.xenium``'s ``pixel_size``.
    """

    matrix: np.ndarray
    morphology_pixel_size_um: float

    @property
    def affine(self) -> np.ndarray:
        """The (3, 3) matrix from Xenium µm to H&E px, in HEST's arithmetic."""
        ps = self.morphology_pixel_size_um
        in_um = np.array(self.matrix, dtype=np.float64)
        in_um[:2, 2] *= ps
        return np.linalg.inv(in_um) / np.array([[ps], [ps], [1.0]])

    @property
    def pixel_size_um(self) -> float:
        """µm per H&E pixel (:func:`he_pixel_size_um`)."""
        return he_pixel_size_um(self.matrix, self.morphology_pixel_size_um)

    def points(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """(n, 2) H&E px (he_x, he_y) of positions in Xenium µm."""
        a = self.affine
        x_um, y_um = np.asarray(x_um, dtype=np.float64), np.asarray(y_um, dtype=np.float64)
        return np.column_stack([a[0, 0] * x_um + a[0, 1] * y_um + a[0, 2], a[1, 0] * x_um + a[1, 1] * y_um + a[1, 2]])

    def geometries(self, geometries: np.ndarray) -> np.ndarray:
        """Shapely geometries in Xenium µm warped onto the H&E (vertex by vertex, vectorised)."""
        return shapely.transform(geometries, lambda xy: self.points(xy[:, 0], xy[:, 1]))
