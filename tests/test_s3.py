"""hest-spatialdata in object storage, against a real S3 API on loopback (tests/s3_server.py: moto behind a proxy)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.storage.locations import locate
from hest_spatialdata.storage.store import store_attrs, store_is_complete

from .helpers import copy_sample


def _upload(store: Path, url: str, **storage_options: object) -> str:
    """Put a local store into the bucket with the package's own publishing (no reconversion)."""
    from hest_spatialdata.storage._publish import publish_store

    publish_store(store, locate(url, storage_options), sample_id=store.stem, overwrite=False)
    return url


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _assert_same_sdata(remote, local) -> None:
    for kind in ("images", "labels"):
        assert set(getattr(remote, kind)) == set(getattr(local, kind))
        for name, tree in getattr(local, kind).items():
            for scale in tree.children:
                mine, theirs = getattr(remote, kind)[name][scale].ds, tree[scale].ds
                for var in theirs.data_vars:
                    assert mine[var].data.chunks == theirs[var].data.chunks
                    assert mine[var].compute().identical(theirs[var].compute()), (name, scale)
    for name, shapes in local.shapes.items():
        pd.testing.assert_frame_equal(remote.shapes[name].drop(columns="geometry"), shapes.drop(columns="geometry"))
        assert (remote.shapes[name].geometry.to_wkb() == shapes.geometry.to_wkb()).all()
    for name, points in local.points.items():
        pd.testing.assert_frame_equal(remote.points[name].compute(), points.compute())
        assert remote.points[name].attrs == points.attrs
    for name, table in local.tables.items():
        assert (remote.tables[name].X != table.X).nnz == 0
        pd.testing.assert_frame_equal(remote.tables[name].obs, table.obs)
        pd.testing.assert_frame_equal(remote.tables[name].var, table.var)
    assert remote.attrs == local.attrs


# --------------------------------------------------------------------------------------------- reading


def test_read_store_is_lazy_and_equals_the_local_store(visium_store: Path, sdata, s3_bucket) -> None:
    import hest_spatialdata as hs

    url = _upload(visium_store, s3_bucket.url("stores", visium_store.name))
    server = s3_bucket.server
    server.reset_log()
    remote = hs.read_store(url)
    chunks = f"{s3_bucket.name}/stores/{visium_store.name}/images/he/s0/c/"
    assert server.requests(chunks) == 0  # opening reads metadata, tables and shapes, never a pixel
    assert remote.path is None
    _assert_same_sdata(remote, sdata)
    assert server.requests(chunks) > 0  # the pixels compared above came from the bucket


def test_read_store_points_stay_lazy_and_equal(rich_store: Path, s3_bucket) -> None:
    import spatialdata as sd

    import hest_spatialdata as hs

    url = _upload(rich_store, s3_bucket.url(rich_store.name))
    remote, local = hs.read_store(url, selection=("points",)), sd.read_zarr(rich_store, selection=("points",))
    assert list(remote.points) == ["transcripts"]
    assert remote.points["transcripts"].npartitions == local.points["transcripts"].npartitions
    _assert_same_sdata(remote, local)


def test_spatialdata_still_cannot_read_remote_stores(visium_store: Path, s3_bucket) -> None:
    """Pins the reasons for storage/reader.py; when this fails, spatialdata changed: re-check whether
    ``spatialdata.read_zarr`` now reads a remote store and the adapter can go."""
    import spatialdata as sd
    import zarr
    from upath import UPath

    url = _upload(visium_store, s3_bucket.url(visium_store.name))
    with pytest.raises(TypeError, match="isinstance"):
        sd.read_zarr(UPath(url))
    group = zarr.open_group(zarr.storage.FsspecStore.from_upath(UPath(url), read_only=True), mode="r")
    with pytest.raises(TypeError, match="multiple values for argument 'fs'"):
        sd.read_zarr(group)


def test_cohort_from_the_bucket_equals_the_local_cohort(hest_root_pair: Path, tmp_path: Path, s3_bucket) -> None:
    import hest_spatialdata as hs
    from hest_spatialdata.storage.store import convert_sample

    for sample_id in ("EXAMPLE1", "EXAMPLE2"):
        _upload(convert_sample(hest_root_pair, sample_id, tmp_path), s3_bucket.url("stores", f"{sample_id}.zarr"))
    server = s3_bucket.server
    server.reset_log()
    remote = hs.open_cohort(s3_bucket.url("stores"))
    objects = [key for m, key, _, _ in server.log if m == "GET" and "/" in key]  # the others list the bucket
    assert [key for key in objects if not key.endswith(("zarr.json", ".parquet"))] == []  # metadata, footers only
    local = hs.open_cohort(tmp_path)
    pd.testing.assert_frame_equal(remote.table.drop(columns="path"), local.table.drop(columns="path"))
    assert remote.table["path"].tolist() == [s3_bucket.url("stores", f"{s}.zarr") for s in ("EXAMPLE1", "EXAMPLE2")]
    mine, theirs = remote.expression(), local.expression()
    assert (mine.X != theirs.X).nnz == 0
    pd.testing.assert_frame_equal(mine.obs, theirs.obs)
    pd.testing.assert_frame_equal(mine.var, theirs.var)
    np.testing.assert_array_equal(mine.obsm["spatial"], theirs.obsm["spatial"])

    code, output = _cli("cohort", s3_bucket.url("stores"), "--format", "csv")
    assert code == 0, output
    assert pd.read_csv(io.StringIO(output))["sample_id"].tolist() == ["EXAMPLE1", "EXAMPLE2"]


# --------------------------------------------------------------------------------------------- converting


def test_convert_three_samples_with_two_workers_then_validate(hest_root: Path, tmp_path: Path, s3_bucket) -> None:
    root = tmp_path / "hest"
    for sample_id in ("EXAMPLE1", "EXAMPLE2", "EXAMPLE3"):
        copy_sample(hest_root, EXAMPLE_SAMPLE_ID, root, sample_id)
    out = s3_bucket.url("stores")
    summary = tmp_path / "summary.json"
    code, output = _cli("convert", str(root), "-o", out, "--workers", "2", "--quiet", "--summary", str(summary))
    assert code == 0, output
    assert json.loads(summary.read_text())["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    for sample_id in ("EXAMPLE1", "EXAMPLE2", "EXAMPLE3"):
        store = f"{out}/{sample_id}.zarr"
        assert store_is_complete(store)
        code, output = _cli("validate", store, "--against", str(root))
        assert code == 0, output
        assert "valid" in output
    keys = s3_bucket.objects("stores/").keys()
    assert not [k for k in keys if k.endswith(".hest-claim.json") or ".hest-write-check" in k]
    secret = s3_bucket.server.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in summary.read_text() and secret not in output
    assert all(secret.encode() not in body for body in s3_bucket.objects("stores/").values())

    code, output = _cli("convert", str(root), "-o", out, "--quiet", "--summary", str(summary))
    assert code == 0
    assert json.loads(summary.read_text())["counts"] == {"done": 0, "skipped": 3, "failed": 0}


def test_storage_options_on_the_command_line_are_used_and_never_shown(
    hest_root: Path, tmp_path: Path, s3_bucket, monkeypatch
) -> None:
    server = s3_bucket.server
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # the endpoint and keys only from --storage-option
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    secret = "a-secret-never-printed"
    options = [
        "--storage-option", f"client_kwargs.endpoint_url={server.endpoint}",
        "--storage-option", "key=testing-key", "--storage-option", f"secret={secret}",
    ]  # fmt: skip
    out, summary = s3_bucket.url("stores"), tmp_path / "summary.json"
    code, output = _cli("convert", str(hest_root), "-o", out, "--quiet", "--summary", str(summary), *options)
    assert code == 0, output
    code, shown = _cli("cohort", out, "--format", "json", *options)
    assert code == 0 and json.loads(shown)[0]["sample_id"] == EXAMPLE_SAMPLE_ID, shown
    code, checked = _cli("validate", f"{out}/{EXAMPLE_SAMPLE_ID}.zarr", *options)
    assert code == 0, checked
    for text in (output, shown, checked, summary.read_text()):
        assert secret not in text
    assert all(secret.encode() not in body for body in s3_bucket.objects().values())


def test_parse_storage_options() -> None:
    from hest_spatialdata.storage.locations import parse_storage_options

    parsed = parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://h:1", "profile=lab", "n=3"])
    assert parsed == {"anon": True, "client_kwargs": {"endpoint_url": "http://h:1"}, "profile": "lab", "n": 3}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_storage_options(["anon"])


def test_a_killed_remote_conversion_resumes_to_the_same_objects(hest_root: Path, tmp_path: Path, s3_bucket) -> None:
    from hest_spatialdata.storage.store import convert_sample

    server = s3_bucket.server
    reference = s3_bucket.url("reference")
    convert_sample(hest_root, EXAMPLE_SAMPLE_ID, reference)
    expected = {k.split("/", 1)[1]: v for k, v in s3_bucket.objects("reference/").items()}

    out = s3_bucket.url("stores")
    server.set_faults(put_delay_s=0.3)  # a slow upload, to kill the converter in the middle of it
    command = [sys.executable, "-m", "hest_spatialdata", "convert", str(hest_root), "-o", out, "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 180
    uploaded: list[str] = []
    while len(uploaded) < 20 and proc.poll() is None and time.monotonic() < deadline:
        uploaded = s3_bucket.keys("stores/")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    server.set_faults()
    assert len(uploaded) >= 20, proc.stderr.read().decode()[-2000:]
    store = f"{out}/{EXAMPLE_SAMPLE_ID}.zarr"
    left = s3_bucket.keys("stores/")
    assert any(k.endswith(".hest-claim.json") for k in left)  # the dead converter's claim and partial objects
    assert not store_is_complete(store) and store_attrs(store) is None

    code, output = _cli("convert", str(hest_root), "-o", out, "--quiet")
    assert code == 0, output
    resumed = {k.split("/", 1)[1]: v for k, v in s3_bucket.objects("stores/").items()}
    assert resumed.keys() == expected.keys()
    differ = [k for k in expected if resumed[k] != expected[k]]
    assert differ == [], differ


def test_a_live_claim_keeps_a_second_converter_out(visium_store: Path, s3_bucket) -> None:
    from hest_spatialdata.storage._publish import CLAIM_NAME, StoreBusyError, publish_store

    url = s3_bucket.url("stores", visium_store.name)
    claim = {"host": os.uname().nodename, "pid": os.getpid(), "token": "other", "created": time.time()}
    locate(f"{url}/{CLAIM_NAME}").write_bytes(json.dumps(claim).encode())
    with pytest.raises(StoreBusyError, match="is being written by"):
        publish_store(visium_store, locate(url), sample_id=EXAMPLE_SAMPLE_ID, overwrite=False)
    assert list(s3_bucket.objects("stores/")) == [f"stores/{visium_store.name}/{CLAIM_NAME}"]


def test_a_claim_whose_reply_was_lost_is_still_ours(visium_store: Path, s3_bucket) -> None:
    """The claim's conditional create reaches the server but its reply is lost: the retry finds the claim there,
    sees its own token, and goes on (it is not another converter's)."""
    from hest_spatialdata.storage._publish import CLAIM_NAME, publish_store

    url = s3_bucket.url("stores", visium_store.name)
    s3_bucket.server.set_faults(lose_reply=CLAIM_NAME)
    publish_store(visium_store, locate(url), sample_id=EXAMPLE_SAMPLE_ID, overwrite=False)
    assert s3_bucket.server.faults.get("lost") == 1
    prefix = f"stores/{visium_store.name}/"
    files = {p.relative_to(visium_store).as_posix() for p in visium_store.rglob("*") if p.is_file()}
    assert {k[len(prefix) :] for k in s3_bucket.objects(prefix)} == files  # complete, and the claim released


def test_a_busy_store_is_refused_before_converting(hest_root: Path, s3_bucket, tmp_path: Path) -> None:
    """A live claim on the target is seen before the sample is read: a damaged slide is not even opened."""
    from hest_spatialdata.storage._publish import CLAIM_NAME, StoreBusyError
    from hest_spatialdata.storage.store import convert_sample

    root = copy_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, EXAMPLE_SAMPLE_ID)
    (root / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif").write_bytes(b"not a tiff")  # converting first would fail on it
    url = s3_bucket.url("stores")
    claim = {"host": os.uname().nodename, "pid": os.getpid(), "token": "other", "created": time.time()}
    locate(f"{url}/{EXAMPLE_SAMPLE_ID}.zarr/{CLAIM_NAME}").write_bytes(json.dumps(claim).encode())
    with pytest.raises(StoreBusyError, match="is being written by"):
        convert_sample(root, EXAMPLE_SAMPLE_ID, url)


def test_two_converters_of_one_sample_leave_one_whole_store(visium_store: Path, s3_bucket) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from hest_spatialdata.storage._publish import StoreBusyError
    from hest_spatialdata.storage.store import StoreExistsError

    url = s3_bucket.url("stores", visium_store.name)
    s3_bucket.server.set_faults(put_delay_s=0.01)  # long enough for the two to overlap

    def publish(_: int) -> str:
        try:
            _upload(visium_store, url)
        except (StoreBusyError, StoreExistsError) as e:
            return type(e).__name__
        return "published"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(publish, range(2)))
    assert outcomes[0] in ("StoreBusyError", "StoreExistsError") and outcomes[1] == "published", outcomes
    files = {p.relative_to(visium_store).as_posix(): p.read_bytes() for p in visium_store.rglob("*") if p.is_file()}
    prefix = f"stores/{visium_store.name}/"
    assert {k[len(prefix) :]: v for k, v in s3_bucket.objects(prefix).items()} == files
    with pytest.raises(StoreExistsError):  # a third one later: the complete store is left exactly as it is
        _upload(visium_store, url)
    assert {k[len(prefix) :]: v for k, v in s3_bucket.objects(prefix).items()} == files


# --------------------------------------------------------------------------------------------- faults


def test_faults_are_retried_on_write_and_read(visium_store: Path, sdata, s3_bucket) -> None:
    import hest_spatialdata as hs

    server = s3_bucket.server
    server.set_faults(fail_every=5, cut_every=7)
    url = _upload(visium_store, s3_bucket.url("stores", visium_store.name))
    _assert_same_sdata(hs.read_store(url), sdata)
    assert server.faults["503"] > 10 and server.faults["cut"] > 10


def test_a_write_that_finally_fails_leaves_no_complete_looking_store(visium_store: Path, s3_bucket) -> None:
    server = s3_bucket.server
    server.set_faults(refuse="/images/he/s0/c/0/0/0")  # this upload always fails
    url = s3_bucket.url("stores", visium_store.name)
    few_retries = {"config_kwargs": {"retries": {"max_attempts": 1}}}  # botocore gives up at once; s3fs retries 5 times
    with pytest.raises(OSError, match="reduce your request rate"):
        _upload(visium_store, url, **few_retries)
    server.set_faults()
    assert not store_is_complete(url) and store_attrs(url) is None
    assert s3_bucket.objects("stores/") == {}  # the partial objects and the claim were removed


def test_a_bucket_without_permission_is_one_message_and_exit_1(hest_root: Path, s3_bucket, monkeypatch) -> None:
    server = s3_bucket.server
    locked = server.new_bucket("locked")
    with server.restricted(s3_bucket.name) as (key, secret):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        code, output = _cli("convert", str(hest_root), "-o", f"s3://{locked}/stores", "--quiet")
        assert code == 1
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: access denied to s3://"), output
        assert secret not in output and "Traceback" not in output
        for command in (["cohort"], ["validate"], ["thumbnail", EXAMPLE_SAMPLE_ID, "-o", "t.png", "--root"]):
            code, output = _cli(*command, f"s3://{locked}/stores/{EXAMPLE_SAMPLE_ID}.zarr")
            assert code == 1 and output.startswith("error: access denied to s3://"), (command, output)
            assert "Traceback" not in output


# --------------------------------------------------------------------------------------------- viewers


def test_napari_reader_and_thumbnail_read_a_remote_store(visium_store: Path, s3_bucket, tmp_path, monkeypatch) -> None:
    from packaging.version import Version

    from hest_spatialdata.napari import _napari_spatialdata_adapter as adapter
    from hest_spatialdata.napari._catalog import store_catalog
    from hest_spatialdata.napari._reader import get_store_reader, read_store

    url = _upload(visium_store, s3_bucket.url("stores", visium_store.name))
    assert get_store_reader(url) is not None
    assert get_store_reader(s3_bucket.url("stores", "missing.zarr")) is None
    monkeypatch.setattr(adapter, "napari_spatialdata_version", lambda: Version("0.9.0"))  # plain layers back
    names = [kwargs["name"] for _, kwargs, _ in read_store(url)]
    assert names and names == [kwargs["name"] for _, kwargs, _ in read_store(str(visium_store))]
    assert store_catalog(s3_bucket.url("stores"))["store"].tolist() == [url]

    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()  # as `napari URL --plugin hest-spatialdata` does at start
    viewer = ViewerModel()
    viewer.open(url, plugin="hest-spatialdata")
    assert [layer.name for layer in viewer.layers] == names

    png = tmp_path / "thumb.png"
    code, output = _cli("thumbnail", EXAMPLE_SAMPLE_ID, "-o", str(png), "--root", s3_bucket.url("stores"))
    assert code == 0, output
    from PIL import Image

    assert max(Image.open(png).size) >= 1000


def test_a_cohort_opened_with_storage_options_alone_reads_expression_and_patches(
    visium_store: Path, s3_bucket, monkeypatch
) -> None:
    """The endpoint and keys only in storage_options: the spot tables and the patches are read with them too."""
    import numpy as np

    import hest_spatialdata as hs

    server = s3_bucket.server
    url = _upload(visium_store, s3_bucket.url(f"opts/{visium_store.name}"))
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    options = {"client_kwargs": {"endpoint_url": server.endpoint}, "key": "testing-key", "secret": "testing-secret"}
    cohort = hs.open_cohort(url.rsplit("/", 1)[0], storage_options=options)
    local = hs.open_cohort(visium_store.parent)
    assert (cohort.expression().X != local.expression().X).nnz == 0
    genes = list(local.expression().var_names[:3])
    remote_patches = cohort.patch_dataset(genes=genes, patch_size_px=64, um_per_px=2.0)
    local_patches = local.patch_dataset(genes=genes, patch_size_px=64, um_per_px=2.0)
    for index in (0, len(local_patches) // 2):
        mine, theirs = remote_patches[index], local_patches[index]
        np.testing.assert_array_equal(mine[0], theirs[0])
        np.testing.assert_array_equal(mine[1], theirs[1])
        assert mine[2:] == theirs[2:]


def test_dataloader_workers_started_by_fork_read_patches_from_the_bucket(visium_store: Path, s3_bucket) -> None:
    """torch's DataLoader with two workers started by fork (Linux's default) over a store in the bucket that the
    parent opened (its zarr.json read through the store's S3 filesystem): each worker gets its own filesystem (an
    inherited one is bound to the parent's event loop: fsspec raises "not fork-safe"), and the batches equal the
    local store's. No chunk is read in the parent, so that every one is fetched in a worker."""
    from .helpers import import_or_fail_in_ci

    torch = import_or_fail_in_ci("torch")
    from hest_spatialdata.loaders import PatchDataset

    url = _upload(visium_store, s3_bucket.url(f"fork/{visium_store.name}"))
    remote = PatchDataset(url, patch_size_px=40, um_per_px=3.0)
    local = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0)
    indices = list(range(0, len(local), max(1, len(local) // 48)))[:48]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(remote, indices), batch_size=8, num_workers=2, multiprocessing_context="fork"
    )
    got = torch.cat([batch[0] for batch in loader]).numpy()
    expected = np.stack([local[i][0] for i in indices])
    np.testing.assert_array_equal(got, expected)
