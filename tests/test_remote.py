"""Remote HEST roots (``hf://``) against the loopback hub: little fetched, exact pixels, faults, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from hest_spatialdata._constants import Technology
from hest_spatialdata.cli import main
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, write_slide
from hest_spatialdata.example.slide import he_texture
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.sample import read_hest
from hest_spatialdata.readers.wsi import REMOTE_BLOCK, next_ifd_offset, read_wsi, slide_levels
from hest_spatialdata.roots import remote
from hest_spatialdata.roots.samples import list_sample_ids, sample_files
from hest_spatialdata.source.layout import PARTS, Part

from .helpers import HUB_SAMPLE_IDS, copy_sample
from .hub_server import FakeHub

HF_ROOT = "hf://datasets/MahmoodLab/hest"
SLIDE_ID = "BIG1"


@pytest.fixture(scope="session")
def slide_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo holding one 2,600 x 2,400 px HEST-like slide (5 levels, 256-px LZW tiles; read-only)."""
    root = tmp_path_factory.mktemp("slide_repo")
    write_slide(root / "wsis" / f"{SLIDE_ID}.tif", he_texture(2600, 2400, seed=3), 0.5)
    return root


@pytest.fixture
def slide_hub(slide_repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A loopback hub serving ``slide_repo``; set ``fail_every`` / ``cut_every`` on it to inject faults."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    remote.forget_roots()
    with FakeHub(slide_repo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub
    remote.forget_roots()


def _levels(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def _open_remote_slide(hub: FakeHub):
    files = sample_files(HF_ROOT, SLIDE_ID)
    slide = files.require(Part.WSI)
    ctx = SampleContext(SLIDE_ID, 0.5, Technology.VISIUM, (2600, 2400))
    return slide, read_wsi(slide, ctx)


def _tile_bytes(path: Path, rows: range, cols: range) -> int:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = page.chunked[1]
        return sum(page.databytecounts[r * across + c] for r in rows for c in cols)


def test_a_remote_slide_opens_with_its_header_and_reads_exact_pixels(slide_hub, slide_repo):
    local = slide_repo / "wsis" / f"{SLIDE_ID}.tif"
    size = local.stat().st_size
    slide, tree = _open_remote_slide(slide_hub)
    opened = slide_hub.sent()
    assert 0 < opened <= 0.03 * size  # the header and tile tables only (the benchmark: < 0.2 % of 239 MB)
    local_levels = _levels(local)
    assert len(tree) == len(local_levels) == 5

    slide_hub.reset_log()
    coarsest = tree[f"scale{len(tree) - 1}"]["image"].values.transpose(1, 2, 0)
    np.testing.assert_array_equal(coarsest, local_levels[-1])
    assert slide_hub.sent() <= 2 * (size - int(tifffile.TiffFile(local).pages[4].dataoffsets[0]))

    slide_hub.reset_log()
    window = tree["scale0"]["image"][:, 256:2304, 256:2304].values.transpose(1, 2, 0)
    np.testing.assert_array_equal(window, local_levels[0][256:2304, 256:2304])
    compressed = _tile_bytes(local, range(1, 9), range(1, 9))
    assert compressed <= slide_hub.sent() <= 2 * compressed

    _, tree = _open_remote_slide(slide_hub)  # nothing fetched ahead by the window above
    slide_hub.reset_log()  # whole chunks: one request per row of tiles of each 2048-px block, as a conversion
    window = tree["scale0"]["image"][:, :2048, :2048].values.transpose(1, 2, 0)
    np.testing.assert_array_equal(window, local_levels[0][:2048, :2048])
    assert REMOTE_BLOCK == 2048 and slide_hub.file_requests() == 8
    assert slide_hub.sent() == _tile_bytes(local, range(8), range(8))


@pytest.mark.parametrize(("y0", "x0"), [(300, 700), (1024, 1024), (1900, 1500)])
def test_a_window_fetches_only_its_tiles(slide_hub, slide_repo, y0, x0):
    """A viewer's 768-px window (within a chunk, across chunk edges, at the slide's edge): its tiles, not blocks."""
    local = slide_repo / "wsis" / f"{SLIDE_ID}.tif"
    _, tree = _open_remote_slide(slide_hub)
    slide_hub.reset_log()
    y1, x1 = min(y0 + 768, 2600), min(x0 + 768, 2400)
    window = tree["scale0"]["image"][:, y0:y1, x0:x1].values.transpose(1, 2, 0)
    np.testing.assert_array_equal(window, _levels(local)[0][y0:y1, x0:x1])
    tiles = _tile_bytes(local, range(y0 // 256, -(-y1 // 256)), range(x0 // 256, -(-x1 // 256)))
    assert tiles <= slide_hub.sent() <= 2 * tiles
    assert slide_hub.file_requests() <= -(-y1 // 256) - y0 // 256 + 4  # a row of tiles per request (per chunk)


def test_a_remote_conversion_reads_2048_px_blocks(fake_hub, hub_repo, tmp_path):
    """A conversion asks for one row of tiles of each 2048-px block per request, so its tiles in few requests."""
    from hest_spatialdata.storage.store import convert_sample

    slide = PARTS[Part.WSI].path(hub_repo, "ZEN61")
    read_hest(HF_ROOT, "ZEN61", elements=["he"])  # the header only
    header = fake_hub.file_requests("wsis/ZEN61.tif")
    remote.forget_roots()
    fake_hub.reset_log()
    convert_sample(HF_ROOT, "ZEN61", tmp_path / "out", elements=["he"])
    with tifffile.TiffFile(slide) as tif:
        shapes = [level.shape for level in tif.series[0].levels]
    # one request per row of tiles of a 2048-px block, or per block where its rows follow each other in the file
    blocks = sum(
        -(-height // REMOTE_BLOCK) if width <= REMOTE_BLOCK else -(-height // 256) * -(-width // REMOTE_BLOCK)
        for height, width, _ in shapes
    )
    assert fake_hub.file_requests("wsis/ZEN61.tif") == header + blocks
    assert fake_hub.sent("wsis/ZEN61.tif") <= 1.05 * slide.stat().st_size  # every tile once


@pytest.mark.parametrize("fault", [{"fail_every": 7}, {"cut_every": 5}, {"fail_every": 3, "cut_every": 4}])
def test_reads_stay_exact_through_503s_and_cut_bodies(slide_hub, slide_repo, fault):
    for name, every in fault.items():
        setattr(slide_hub, name, every)
    _, tree = _open_remote_slide(slide_hub)
    local_levels = _levels(slide_repo / "wsis" / f"{SLIDE_ID}.tif")
    for k, level in enumerate(local_levels):
        np.testing.assert_array_equal(tree[f"scale{k}"]["image"].values.transpose(1, 2, 0), level)
    assert sum(slide_hub.faults.values()) >= 4


def test_timeouts_are_retried(slide_hub, slide_repo, monkeypatch):
    import huggingface_hub.constants

    _, tree = _open_remote_slide(slide_hub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    slide_hub.slow_every, slide_hub.delay_s = 3, 1.0  # 8 requests (rows of tiles), 2 or 3 of them too slow
    level = _levels(slide_repo / "wsis" / f"{SLIDE_ID}.tif")[0][:2048, :2048]
    np.testing.assert_array_equal(tree["scale0"]["image"][:, :2048, :2048].values.transpose(1, 2, 0), level)
    assert slide_hub.faults["slow"] >= 2


def test_a_server_failing_every_time_gives_a_clear_error(slide_hub, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF_S", 0.001)
    slide, _ = _open_remote_slide(slide_hub)
    slide_hub.fail_every = 1
    with pytest.raises(remote.RemoteReadError, match=r"BIG1\.tif: bytes 0-99: failed 6 times.*503"):
        slide.fetch(0, 100)


def test_next_ifd_pointer_is_read_from_the_tiff(slide_repo, tmp_path):
    local = slide_repo / "wsis" / f"{SLIDE_ID}.tif"
    with tifffile.TiffFile(local) as tif:
        assert next_ifd_offset(tif, tif.pages[0]) == tif.pages[1].offset
        assert next_ifd_offset(tif, tif.pages[len(tif.pages) - 1]) == 0


def _truncate(path: Path, fraction: float = 0.97) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_a_truncated_slide_fails_locally_with_no_store(hest_root, tmp_path):
    root = copy_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path / "hest", EXAMPLE_SAMPLE_ID)
    _truncate(PARTS[Part.WSI].path(root, EXAMPLE_SAMPLE_ID))
    result = CliRunner().invoke(main, ["convert", str(root), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert "truncated" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / f"{EXAMPLE_SAMPLE_ID}.zarr").exists()


def test_a_truncated_slide_fails_remotely(slide_repo, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(slide_repo, repo)
    _truncate(repo / "wsis" / f"{SLIDE_ID}.tif")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    remote.forget_roots()
    with FakeHub(repo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        slide = sample_files(HF_ROOT, SLIDE_ID).require(Part.WSI)
        with pytest.raises(HestInputError, match="truncated"):
            slide_levels(slide, SLIDE_ID)
        assert hub.sent() < 0.05 * slide.size


# --------------------------------------------------------------------------------------------- whole samples


def test_sample_files_are_found_with_one_request(fake_hub):
    remote.open_root(HF_ROOT)
    before = len(fake_hub.requests)
    files = sample_files(HF_ROOT, "ZEN61")
    assert len(fake_hub.requests) == before + 1  # one paths-info for every name of the registry
    assert {p.value for p in files.paths} == {"wsi", "st", "metadata", "thumbnail"}
    assert files.relative(Part.WSI) == "wsis/ZEN61.tif"
    assert list_sample_ids(HF_ROOT) == sorted(HUB_SAMPLE_IDS)
    with pytest.raises(HestInputError, match="unknown sample id"):
        sample_files(HF_ROOT, "NOPE1")


def test_convert_from_the_hub_equals_the_local_files(fake_hub, hub_repo, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["convert", f"{HF_ROOT}@main", "-o", str(out), "--id", "ZEN61", "--quiet"])
    assert result.exit_code == 0, result.output
    store = out / "ZEN61.zarr"
    result = runner.invoke(main, ["validate", str(store), "--against", str(hub_repo)])
    assert result.exit_code == 0, result.output
    slide = PARTS[Part.WSI].path(hub_repo, "ZEN61")
    assert fake_hub.sent("wsis/ZEN61.tif") < 1.5 * slide.stat().st_size  # tiles once, no whole-file download
    cache = Path(tmp_path / "hf_cache")
    snapshot = {p.relative_to(p.parents[1]).as_posix() for p in cache.glob("*/snapshots/*/*/*")}
    assert snapshot == {"metadata/ZEN61.json", "st/ZEN61.h5ad"}  # the small parts only, never the slide
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["hest"]
    assert attrs["source_files"]["wsi"] == {"name": "wsis/ZEN61.tif", "size": slide.stat().st_size}
    # resumable: a second run skips the complete store without reading the slide again
    fake_hub.reset_log()
    result = runner.invoke(main, ["convert", HF_ROOT, "-o", str(out), "--id", "ZEN61", "--quiet"])
    assert result.exit_code == 0 and "skipped" in result.output
    assert fake_hub.sent("wsis/ZEN61.tif") == 0


def test_convert_from_the_hub_with_workers(fake_hub, tmp_path):
    out = tmp_path / "out"
    args = ["convert", HF_ROOT, "-o", str(out), "--workers", "2", "--quiet", "--elements", "he,spots,table"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--all" in result.output  # every sample of HEST-1k only when asked
    result = CliRunner().invoke(main, [*args, "--all"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("*.zarr")} == {f"{i}.zarr" for i in HUB_SAMPLE_IDS}


@pytest.mark.parametrize("token", [None, "hf_not_accepted"])
def test_a_gated_remote_root_gives_the_download_message(fake_hub, monkeypatch, tmp_path, token):
    fake_hub.gated = True
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result = CliRunner().invoke(main, ["convert", HF_ROOT, "-o", str(tmp_path / "out"), "--id", "ZEN61", "--quiet"])
    assert result.exit_code == 1
    assert "accept its terms" in result.output and "HF_TOKEN" in result.output
    assert f"HTTP {403 if token else 401}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["thumbnail", "ZEN61", "-o", str(tmp_path / "ZEN61.png")])
    assert result.exit_code == 1 and "accept its terms" in result.output and "Traceback" not in result.output


def test_thumbnail_fetches_only_the_coarsest_level(fake_hub, hub_repo, tmp_path):
    out = tmp_path / "ZEN61.png"
    result = CliRunner().invoke(main, ["thumbnail", "ZEN61", "-o", str(out), "--min-side", "0"])
    assert result.exit_code == 0, result.output
    slide = PARTS[Part.WSI].path(hub_repo, "ZEN61")
    levels = _levels(slide)
    with tifffile.TiffFile(slide) as tif:
        last = tif.pages[len(tif.pages) - 1]
        coarsest_bytes = sum(last.databytecounts)
        first_tile = min(last.dataoffsets)
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == levels[-1].shape
    drawn = np.any(picture != levels[-1], axis=-1)
    assert 0.01 < drawn.mean() < 0.9  # spot outlines; elsewhere the coarsest level, pixel for pixel
    tiles = [(start, n) for name, start, n in fake_hub.ranges if name == "wsis/ZEN61.tif" and start >= first_tile]
    assert sum(n for _, n in tiles) >= coarsest_bytes
    header_blocks = len(levels) + 1  # libvips writes each level's IFD after its tiles: one block each, and block 0
    assert fake_hub.sent("wsis/ZEN61.tif") <= coarsest_bytes + header_blocks * remote.BLOCK_SIZE


def test_thumbnail_draws_the_coarsest_level_big_enough(fake_hub, hub_repo, tmp_path):
    out = tmp_path / "ZEN61.png"
    levels = _levels(PARTS[Part.WSI].path(hub_repo, "ZEN61"))
    side = max(levels[1].shape[:2])  # level 1 is the coarsest with at least this side
    result = CliRunner().invoke(main, ["thumbnail", "ZEN61", "-o", str(out), "--min-side", str(side)])
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out).convert("RGB")).shape == levels[1].shape
    result = CliRunner().invoke(main, ["thumbnail", "ZEN61", "-o", str(out), "--min-side", str(10**6), "--no-spots"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), levels[0])  # none as big: level 0


def test_the_napari_hest_reader_takes_hub_paths(fake_hub, hub_repo):
    from hest_spatialdata.napari._reader import find_hest_sample, get_hest_reader

    url = f"{HF_ROOT}/wsis/ZEN61.tif"
    assert find_hest_sample(url) == (HF_ROOT, "ZEN61")
    assert find_hest_sample(f"{HF_ROOT}@main/st/NCBI680.h5ad") == (f"{HF_ROOT}@main", "NCBI680")
    assert find_hest_sample(f"{HF_ROOT}/README.md") is None
    layers = get_hest_reader(url)(url)
    assert [layer[0] for layer in layers if layer[2] == "image"] and fake_hub.sent("wsis/ZEN61.tif") > 0
    assert fake_hub.sent("wsis/ZEN61.tif") < PARTS[Part.WSI].path(hub_repo, "ZEN61").stat().st_size / 2


def test_every_element_converts_from_the_hub_and_patches_are_not_downloaded(hest_root, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    remote.forget_roots()
    runner = CliRunner()
    with FakeHub(hest_root) as hub:  # the Visium example with patches, nuclei and tissue contours
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        result = runner.invoke(main, ["convert", HF_ROOT, "-o", str(tmp_path / "out"), "--quiet", "--all"])
        assert result.exit_code == 0, result.output
        patches = PARTS[Part.PATCHES].relative_paths(EXAMPLE_SAMPLE_ID)[0]
        assert 0 < hub.sent(patches) < (hest_root / patches).stat().st_size / 4  # coords and barcodes, no images
    remote.forget_roots()
    store = tmp_path / "out" / f"{EXAMPLE_SAMPLE_ID}.zarr"
    result = runner.invoke(main, ["validate", str(store), "--against", str(hest_root)])
    assert result.exit_code == 0, result.output
    elements = json.loads((store / "zarr.json").read_text())["attributes"]["hest"]["elements"]
    assert {"patches", "nuclei", "tissue", "spots"} <= set(elements["shapes"])


def test_a_xenium_sample_converts_from_the_hub_reading_transcripts_by_ranges(xenium_root, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    remote.forget_roots()
    runner = CliRunner()
    with FakeHub(xenium_root, cut_every=9) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        result = runner.invoke(main, ["convert", HF_ROOT, "-o", str(tmp_path / "out"), "--id", "XENB", "--quiet"])
        assert result.exit_code == 0, result.output
        transcripts = PARTS[Part.TRANSCRIPTS].relative_paths("XENB")[0]
        assert hub.sent(transcripts) > 0 and hub.faults["cut"] > 0
    remote.forget_roots()
    assert not list((tmp_path / "hf_cache").rglob("*transcripts*"))  # read by ranges, never copied
    store = tmp_path / "out" / "XENB.zarr"
    result = runner.invoke(main, ["validate", str(store), "--against", str(xenium_root)])
    assert result.exit_code == 0, result.output


def test_filters_on_a_hub_root_use_the_catalog(fake_hub, tmp_path):
    out = tmp_path / "out"
    args = ["convert", HF_ROOT, "-o", str(out), "--organ", "Brain", "--elements", "he", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.glob("*.zarr")] == ["ZEN61.zarr"]
    assert "metadata/NCBI680.json" not in fake_hub.downloads()  # selected on the catalog, not on each JSON


def test_any_fsspec_url_is_a_root(hub_repo):
    import fsspec

    from hest_spatialdata.readers.sample import read_hest

    memory = fsspec.filesystem("memory")
    for part in (Part.WSI, Part.ST, Part.METADATA):
        rel = PARTS[part].relative_paths("ZEN61")[0]
        memory.pipe(f"/hest_test/{rel}", (hub_repo / rel).read_bytes())
    remote.forget_roots()
    try:
        assert list_sample_ids("memory://hest_test") == ["ZEN61"]
        sdata = read_hest("memory://hest_test", "ZEN61", elements=["he", "spots"])
        local = read_hest(hub_repo, "ZEN61", elements=["he", "spots"])
        last = f"scale{len(local['he']) - 1}"
        np.testing.assert_array_equal(sdata["he"][last]["image"].values, local["he"][last]["image"].values)
        assert sdata["spots"].equals(local["spots"])
        copied = {part: local.attrs["hest"]["source_files"][part] for part in ("wsi", "st", "metadata")}
        assert sdata.attrs["hest"]["source_files"] == copied
    finally:
        memory.rm("/hest_test", recursive=True)
        remote.forget_roots()
