"""Compiled polygon fill for ``nuclei_labels``: scikit-image's pixel rule, all of a chunk's polygons in one call.

``skimage.draw.polygon(r, c, shape)`` scans the pixels ``(row, col)`` from ``int(max(0, min))`` to ``ceil(max)``
of the vertices (within ``shape``) and keeps those whose ``point_in_polygon(x=col, y=row)`` is not 0: O'Rourke's
crossing test, with the point inside (odd rightward crossings), on an edge (rightward and leftward crossings of
different parity) or within 1e-12 of a vertex. :func:`draw_chunk` keeps that test and its arithmetic (same
operands, same order, IEEE double, no fast-math) but finds once per row the few edges that straddle it, instead of
testing every edge at every pixel, and draws all of a chunk's polygons in one compiled call. A nucleus with no pixel
in the chunk becomes a dot at its vertices' mean, rounded half to even and clipped to the chunk, as before (the dot
keeps small nuclei visible on the coarse levels). Polygons are drawn in the order given, the later winning where
they overlap.

The equality with scikit-image, pixel for pixel, is tested in ``tests/test_nuclei_labels.py``.
"""

from __future__ import annotations

import numba
import numpy as np

#: skimage's tolerance for a pixel centre on a vertex (``skimage/_shared/geometry.pyx``).
_EPS = 1e-12
#: How close to a crossing a pixel centre is decided by skimage's own arithmetic: ~1e6 times the rounding error of
#: the crossing abscissa for coordinates of a few thousand pixels.
_MARGIN = 1e-6


@numba.njit(cache=True, nogil=True)
def draw_chunk(
    coords: np.ndarray,
    starts: np.ndarray,
    ids: np.ndarray,
    hits: np.ndarray,
    origin: tuple[int, int, int, int],
    factor: int,
) -> np.ndarray:  # pragma: no cover - compiled; tested through its result
    """Draw the polygons ``hits`` (row order) of the flat ``coords`` into a new ``(height, width)`` uint32 canvas.

    Parameters
    ----------
    coords
        ``(n_vertices, 2)`` float64 ``x, y`` of every ring, in level-0 px, rings one after another.
    starts
        Ring ``k`` is ``coords[starts[k]:starts[k + 1]]``.
    ids
        uint32 label of each ring.
    hits
        The rings to draw, in drawing order.
    origin
        ``(y0, x0, height, width)`` of the chunk, in px of its level.
    factor
        Level-0 px per px of the level.

    Returns
    -------
    The chunk, ``0`` where no polygon is.
    """
    y0, x0, height, width = origin
    canvas = np.zeros((height, width), np.uint32)
    oy = float(y0) + 0.5  # pixel (i, j) covers [i, i + 1): it is drawn when its centre is inside
    ox = float(x0) + 0.5
    edges = np.empty((64, 3), np.int64)  # per row: the edges straddling it, then the vertices on it
    crossings = np.empty(64)  # per row: the abscissa where each of those edges crosses it
    for k in range(len(hits)):
        index = hits[k]
        ring = coords[starts[index] : starts[index + 1]]
        xs = ring[:, 0] / factor - ox
        ys = ring[:, 1] / factor - oy
        if len(edges) < 2 * len(xs):
            edges = np.empty((2 * len(xs), 3), np.int64)
            crossings = np.empty(2 * len(xs))
        drawn = _fill(canvas, xs, ys, ids[index], edges, crossings) if len(xs) else 0
        if drawn == 0 and len(xs) > 0:  # smaller than a pixel at this level: a dot, so the overview still shows it
            row = min(max(int(np.rint(_mean(ys))), 0), height - 1)
            col = min(max(int(np.rint(_mean(xs))), 0), width - 1)
            canvas[row, col] = ids[index]
    return canvas


@numba.njit(cache=True, nogil=True)
def _fill(
    canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, value: np.uint32, edges: np.ndarray, crossings: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Set the pixels of scikit-image's ``_polygon`` (over the rows and columns it scans); returns their number.

    Per row, each straddling edge's crossing abscissa ``C`` is computed once: the sign skimage's test takes for a
    pixel at ``x`` (its ``crossing``, ``C - x`` up to ~1e-12 for coordinates of a few thousand px) is then read
    from ``C - x``, and skimage's own arithmetic (:func:`_inside`) decides only the pixels within :data:`_MARGIN` of
    a crossing.
    """
    height, width = canvas.shape
    n = len(xs)
    row_first = int(max(0.0, ys.min()))  # skimage's bounds: int(max(0, min)) .. ceil(max), within the shape
    row_last = min(height - 1, int(np.ceil(ys.max())))
    col_first = int(max(0.0, xs.min()))
    col_last = min(width - 1, int(np.ceil(xs.max())))
    drawn = 0
    for r in range(row_first, row_last + 1):
        y = float(r)
        n_edges = _row_edges(ys, y, edges)
        n_vertices = 0
        for i in range(n):  # vertices on the row, listed after the edges
            if -_EPS < ys[i] - y < _EPS:
                edges[n_edges + n_vertices, 0] = i
                n_vertices += 1
        if n_edges == 0 and n_vertices == 0:
            continue
        for k in range(n_edges):
            i = edges[k, 0]
            j = i - 1 if i > 0 else n - 1
            y0 = ys[i] - y
            y1 = ys[j] - y
            crossings[k] = (xs[i] * y1 - xs[j] * y0) / (y1 - y0)
        for c in range(col_first, col_last + 1):
            x = float(c)
            if n_vertices > 0:
                inside = _inside(xs, ys, x, y, edges, n_edges, n_vertices)
            else:
                inside = _inside_from_crossings(crossings, x, edges, n_edges)
                if inside < 0:  # a crossing within the margin: skimage's arithmetic decides
                    inside = _inside(xs, ys, x, y, edges, n_edges, 0)
            if inside:
                canvas[r, c] = value
                drawn += 1
    return drawn


@numba.njit(cache=True, nogil=True)
def _inside_from_crossings(
    crossings: np.ndarray, x: float, edges: np.ndarray, n_edges: int
) -> int:  # pragma: no cover - compiled
    """1 inside or on an edge, 0 outside, -1 undecided (a crossing within :data:`_MARGIN` of ``x``)."""
    right = 0
    left = 0
    for k in range(n_edges):
        d = crossings[k] - x
        if d > _MARGIN:
            right += edges[k, 1]
        elif d < -_MARGIN:
            left += edges[k, 2]
        else:
            return -1
    return 1 if (right & 1) == 1 or (left & 1) == 1 else 0


@numba.njit(cache=True, nogil=True)
def _row_edges(ys: np.ndarray, y: float, edges: np.ndarray) -> int:  # pragma: no cover - compiled
    """The edges ``(i - 1, i)`` that straddle row ``y`` (rightwards: column 1 = 1, leftwards: column 2 = 1)."""
    n = len(ys)
    count = 0
    y1 = ys[n - 1] - y
    for i in range(n):
        y0 = ys[i] - y
        right = (y0 > 0) != (y1 > 0)
        left = (y0 < 0) != (y1 < 0)
        if right or left:
            edges[count, 0] = i
            edges[count, 1] = right
            edges[count, 2] = left
            count += 1
        y1 = y0
    return count


@numba.njit(cache=True, nogil=True)
def _inside(
    xs: np.ndarray, ys: np.ndarray, x: float, y: float, edges: np.ndarray, n_edges: int, n_vertices: int
) -> bool:  # pragma: no cover - compiled
    """Whether scikit-image's ``point_in_polygon(x, y) != 0`` (inside, on an edge or a vertex), from the row's edges."""
    n = len(xs)
    for k in range(n_edges, n_edges + n_vertices):
        if -_EPS < xs[edges[k, 0]] - x < _EPS:
            return True
    right = 0
    left = 0
    for k in range(n_edges):
        i = edges[k, 0]
        j = i - 1 if i > 0 else n - 1
        x0 = xs[i] - x
        y0 = ys[i] - y
        x1 = xs[j] - x
        y1 = ys[j] - y
        crossing = (x0 * y1 - x1 * y0) / (y1 - y0)
        if edges[k, 1] and crossing > 0:
            right += 1
        if edges[k, 2] and crossing < 0:
            left += 1
    return (right & 1) == 1 or (left & 1) == 1  # inside (right odd) or on an edge (parities differ)


@numba.njit(cache=True, nogil=True)
def _mean(values: np.ndarray) -> float:  # pragma: no cover - compiled
    """The ``mean(axis=0)`` of numpy of a ring's column: a sum in order, then one division."""
    total = 0.0
    for v in values:
        total += v
    return total / len(values)
