from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.roots import hub
from hest_spatialdata.source.layout import hub_patterns
from hest_spatialdata.source.metadata import read_catalog

from .helpers import HUB_SAMPLE_IDS, REALDATA

CATALOGS = REALDATA / "hest_metadata"
V110, V130 = CATALOGS / "HEST_v1_1_0.csv", CATALOGS / "HEST_v1_3_0.csv"
CONVERSION_FILES = {"wsis/{id}.tif", "st/{id}.h5ad", "metadata/{id}.json"}


# --------------------------------------------------------------------------------------------- catalog CSVs


def test_real_catalogs_parse_with_bom_mixed_dates_and_empty_cells():
    assert V110.read_bytes().startswith(b"\xef\xbb\xbf")  # v1_1_0 has a BOM (and CRLF); v1_3_0 has neither
    old, new = read_catalog(V110), read_catalog(V130)
    assert (len(old), len(new)) == (1229, 1276)
    assert old.columns[0] == "dataset_title"  # not "\ufeffdataset_title"
    assert old["id"].is_unique and new["id"].is_unique
    assert set(old["id"]) < set(new["id"])
    assert old["technology"].value_counts().to_dict() == {
        "Visium": 602,
        "Spatial Transcriptomics": 552,
        "Xenium": 65,
        "Visium HD": 10,
    }
    # "Visium HD 3'" and "Xenium 5k" (v1_3_0) are normalised, the raw value is kept
    assert new["technology"].value_counts()[["Visium HD", "Xenium"]].tolist() == [36, 86]
    assert "Visium HD 3'" in set(new["st_technology"])
    # empty cells are missing values, text stays text
    assert old["oncotree_code"].isna().sum() == 923
    assert pd.api.types.is_integer_dtype(new["fullres_px_width"])
    dates = new.set_index("data_publication_date")["publication_date"]
    assert dates["3-May-20"].iloc[0] == pd.Timestamp("2020-05-03")
    assert dates["January 7, 2026"].iloc[0] == pd.Timestamp("2026-01-07")
    assert pd.isna(dates["None (internal)"].iloc[0])


def test_catalog_filters():
    frame = read_catalog(V130)

    def ids(**filters):
        return set(hub.filter_catalog(frame, **filters)["id"])

    visium_hd = ids(technology="Visium HD")
    assert len(visium_hd) == 36
    assert set(frame.loc[frame["st_technology"] == "Visium HD 3'", "id"]) < visium_hd
    assert len(ids(technology="visium hd 3'")) == 8  # a non-canonical name matches only itself
    assert len(ids(technology="xenium")) == 86
    assert ids(species="mouse") == ids(species="Mus musculus")
    assert "ZEN61" in ids(species="mouse", organ="brain", technology="Visium")
    assert ids(oncotree="idc") == set(frame.loc[frame["oncotree_code"] == "IDC", "id"])
    assert ids(disease_state=["Cancer", "Healthy"]) >= ids(disease_state="Cancer")
    assert ids(ids="ZEN61,NCBI680", organ="Brain") == {"ZEN61"}
    assert hub.filter_catalog(frame).equals(frame)
    with pytest.raises(TypeError, match="unknown filter"):
        hub.filter_catalog(frame, tissue="Brain")


def test_newest_catalog_version_is_picked():
    names = ["README.md", "HEST_v1_0_2.csv", "HEST_v1_10_0.csv", "HEST_v1_3_0.csv", "HEST_v2_csv", "st/HEST_v9_0_0.csv"]
    assert hub.newest_catalog_name(names) == "HEST_v1_10_0.csv"
    assert hub.newest_catalog_name(["README.md"]) is None


# --------------------------------------------------------------------------------------------- through the hub


def test_catalog_from_the_hub_is_the_newest_and_cached(fake_hub, monkeypatch):
    import huggingface_hub.constants

    frame = hub.catalog()
    assert len(frame) == 1276  # HEST_v1_3_0.csv, not v1_1_0
    assert fake_hub.downloads() == ["HEST_v1_3_0.csv"]
    before = len(fake_hub.requests)
    assert len(hub.catalog(technology="Visium HD")) == 36
    assert len(fake_hub.requests) == before  # fresh in the cache: no request at all
    hub.catalog(max_age=0)  # re-checked: listed and HEAD, not downloaded again
    assert fake_hub.downloads() == ["HEST_v1_3_0.csv"]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert len(hub.catalog(organ="Brain", max_age=0)) == len(hub.filter_catalog(frame, organ="Brain"))


def test_download_selected_ids_and_parts(fake_hub, hub_repo, tmp_path):
    hest_dir = tmp_path / "hest"
    done = hub.download(hest_dir, ["ZEN61"], progress=False)
    expected = {name.format(id="ZEN61") for name in CONVERSION_FILES}
    assert [d.sample_id for d in done] == ["ZEN61"]
    assert {p.relative_to(hest_dir).as_posix() for p in done[0].files} == expected
    assert set(fake_hub.downloads()) == expected  # nothing of NCBI680, no thumbnail, no catalog
    for name in expected:
        assert (hest_dir / name).read_bytes() == (hub_repo / name).read_bytes()
    assert done[0].nbytes == sum((hub_repo / name).stat().st_size for name in expected)

    thumbs = hub.download(hest_dir, ["NCBI680"], parts=["thumbnails"], progress=False)
    assert [p.name for p in thumbs[0].files] == ["NCBI680_downscaled_fullres.jpeg"]
    assert not (hest_dir / "st" / "NCBI680.h5ad").exists()


def test_download_by_filters_uses_the_catalog(fake_hub, tmp_path):
    done = hub.download(tmp_path / "hest", list(HUB_SAMPLE_IDS), organ="Brain", parts=["metadata"], progress=False)
    assert [d.sample_id for d in done] == ["ZEN61"]  # NCBI680's organ is "Other" in the catalog
    with pytest.raises(hub.HubError, match="no file of TENX95"):
        hub.download(tmp_path / "hest", ["TENX95"], progress=False)


def test_resumed_download_is_a_no_op_and_completes_missing_files(fake_hub, tmp_path):
    hest_dir = tmp_path / "hest"
    hub.download(hest_dir, HUB_SAMPLE_IDS, progress=False)
    before = len(fake_hub.requests)
    hub.download(hest_dir, HUB_SAMPLE_IDS, progress=False)
    again = fake_hub.requests[before:]
    assert not [r for r in again if "/resolve/" in r[1]], again  # not even a HEAD per file
    (hest_dir / "st" / "NCBI680.h5ad").unlink()  # as after an interrupted run
    before = len(fake_hub.downloads())
    hub.download(hest_dir, HUB_SAMPLE_IDS, progress=False)
    assert fake_hub.downloads()[before:] == ["st/NCBI680.h5ad"]


@pytest.mark.parametrize("token", [None, "hf_not_accepted"])
def test_gated_dataset_gives_one_clear_message(fake_hub, monkeypatch, tmp_path, token):
    fake_hub.gated = True
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    runner = CliRunner()
    result = runner.invoke(main, ["download", "-o", str(tmp_path / "hest"), "--id", "ZEN61", "--quiet"])
    assert result.exit_code == 1
    message = result.output
    assert "https://huggingface.co/datasets/MahmoodLab/hest" in message
    assert "accept its terms" in message and "HF_TOKEN" in message
    assert f"HTTP {403 if token else 401}" in message
    assert "Traceback" not in message
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 1
    assert "HF_TOKEN" in result.output and "--catalog" in result.output


def test_existing_files_do_not_hide_a_refusal(fake_hub, tmp_path):
    hest_dir = tmp_path / "hest"
    hub.download(hest_dir, ["ZEN61"], progress=False)
    fake_hub.gated = True  # snapshot_download alone would quietly return the local folder here
    with pytest.raises(hub.HubAccessError, match="accept its terms"):
        hub.download(hest_dir, ["ZEN61"], progress=False)


# --------------------------------------------------------------------------------------------- CLI


def test_cli_list_formats_and_filters():
    runner = CliRunner()
    args = ["list", "--catalog", str(V130), "--technology", "Visium HD", "--species", "human"]
    as_json = json.loads(runner.invoke(main, [*args, "--format", "json"]).output)
    frame = hub.filter_catalog(read_catalog(V130), technology="Visium HD", species="human")
    assert [row["id"] for row in as_json] == frame["id"].tolist()
    as_csv = runner.invoke(main, [*args, "--format", "csv"]).output
    assert pd.read_csv(pd.io.common.StringIO(as_csv))["id"].tolist() == frame["id"].tolist()
    table = runner.invoke(main, [*args, "--format", "table"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert f"{len(frame)} samples" in table.output and frame["id"].iloc[0] in table.output


def test_cli_download_in_a_subprocess_with_hf_endpoint(fake_hub, tmp_path):
    # HF_ENDPOINT set before huggingface_hub is imported, as a user would do it
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache")}
    env.pop("HF_TOKEN", None)
    out = tmp_path / "hest"
    command = [sys.executable, "-m", "hest_spatialdata", "download", "-o", str(out), "--quiet"]
    command += ["--id", "ZEN61", "--parts", "metadata,thumbnails"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ZEN61: 2 files" in result.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if ".cache" not in p.parts) == [
        "metadata",
        "metadata/ZEN61.json",
        "thumbnails",
        "thumbnails/ZEN61_downscaled_fullres.jpeg",
    ]
    usage = subprocess.run(command[:-4] + ["--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--all" in usage.stderr


def test_parts_are_checked():
    with pytest.raises(ValueError, match="unknown part"):
        hub_patterns("ZEN61", ["wsi"])
    assert Path("cellvit_seg/ZEN61_cellvit_seg.parquet").match(hub_patterns("ZEN61", ["cellvit_seg"])[0])
