"""The notebooks run headless, top to bottom, on the example sample (built once for all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("squidpy")
pytest.importorskip("spatialdata_plot")

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example sample and its store, shared by the notebooks through HEST_EXAMPLE_DIR."""
    from hest_spatialdata import example_sample
    from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
    from hest_spatialdata.storage.store import convert_sample

    work = tmp_path_factory.mktemp("notebooks")
    convert_sample(example_sample(work / "hest"), EXAMPLE_SAMPLE_ID, work)
    return work


def test_five_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_tour.ipynb", "02_analysis.ipynb", "03_patch_expression.ipynb", "04_cohort.ipynb", "05_benchmark.ipynb"
    ]  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, example_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEST_EXAMPLE_DIR", str(example_dir))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "no figure drawn"
