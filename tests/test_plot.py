"""The quick-look figure (spatialdata-plot) and ``hest-to-sdata plot``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("spatialdata_plot")

import matplotlib

matplotlib.use("Agg")

from PIL import Image

from hest_spatialdata.cli import main
from hest_spatialdata.views.plot import quicklook


def _check_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file()
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[:2] == size[::-1]  # (height, width)
    assert image.std() > 20, "blank figure"
    return image


def test_quicklook_two_panels(rich_store: Path, tmp_path: Path) -> None:
    import spatialdata as sd

    out = quicklook(rich_store, tmp_path / "sub" / "look.png", panel_size=(4, 3), dpi=80)
    assert out == (tmp_path / "sub" / "look.png").resolve()
    image = _check_png(out, (2 * 4 * 80, 3 * 80))  # spots panel + nuclei panel
    # H&E pixels (pink/purple: red and blue above green) fill much of the figure
    r, g, b = (image[..., i].astype(int) for i in range(3))
    assert ((r > g + 20) & (b > g + 10)).mean() > 0.1

    spots_only = sd.read_zarr(rich_store, selection=("images", "shapes", "tables"))
    del spots_only.shapes["nuclei"]
    _check_png(quicklook(spots_only, tmp_path / "spots.png", gene="Gad1", panel_size=(4, 3), dpi=80), (4 * 80, 3 * 80))


def test_quicklook_unknown_gene_or_coordinate_system(visium_store: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="NOPE"):
        quicklook(visium_store, tmp_path / "x.png", gene="NOPE")
    with pytest.raises(KeyError, match="pixels"):
        quicklook(visium_store, tmp_path / "x.png", coordinate_system="pixels")
    assert not (tmp_path / "x.png").exists()


def test_cli_plot(visium_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative -o lands here, not under scanpy's figdir
    result = CliRunner().invoke(main, ["plot", str(visium_store), "-o", "look.png", "--coordinate-system", "microns"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "look.png").is_file()
    assert str((tmp_path / "look.png").resolve()) in result.output
    bad = CliRunner().invoke(main, ["plot", str(visium_store), "-o", "bad.png", "--gene", "NOPE"])
    assert bad.exit_code == 1
    assert "NOPE" in bad.output


def test_plot_and_napari_share_the_gene_scale_and_nucleus_colours(sdata) -> None:
    from hest_spatialdata.views import plot
    from hest_spatialdata.views._palette import NUCLEUS_CLASS_COLORS, gene_scale

    table = sdata["table"]
    gene = "Gad1"
    counts = np.asarray(table[:, gene].X.todense()).ravel()
    np.testing.assert_allclose(np.asarray(plot._gene_norm(table, gene)(counts)), gene_scale(counts), atol=1e-9)
    # robust: the 1% brightest spots no longer squeeze the others into the darkest colour
    assert np.median(gene_scale(counts)[counts > 0]) > 0.2
    assert plot.NUCLEUS_PALETTE is NUCLEUS_CLASS_COLORS
