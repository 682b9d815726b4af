"""``embed`` over a cohort: the patches read ahead of a real torch encoder, failures, re-runs, interruptions.

The stores are the example cohort's (``tests/conftest.py``: COHST, COHV1, COHV2, 1,554 spots each); the encoders are
small torch modules with random weights (seeded) and plain callables, on 32-px patches at 4 µm/px (level 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import hest_spatialdata as hs
from hest_spatialdata.benchmark._embed import EmbeddingError, select_spots
from hest_spatialdata.benchmark._reader import BatchReader, StorePlan

from .helpers import import_or_fail_in_ci, statuses

torch = import_or_fail_in_ci("torch")

PATCH_PX, UM_PER_PX = 32, 4.0
SAMPLES = ("COHST", "COHV1", "COHV2")


def _copy(cohort_dir: Path, out: Path, samples: tuple[str, ...] = SAMPLES) -> Path:
    for sample_id in samples:
        shutil.copytree(cohort_dir / f"{sample_id}.zarr", out / f"{sample_id}.zarr")
    return out


def _files(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in store.rglob("*")
            if p.is_file()}  # fmt: skip


def _conv_net(seed: int = 0) -> torch.nn.Module:
    """A small CNN with random weights: 3 -> 8 channels, ReLU, 2 x 2 average pool, flattened: (B, 32)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )


def _table(store: Path, name: str):
    import spatialdata as sd

    return sd.read_zarr(store, selection=("tables",))[f"{name}_embeddings"]


def _embed(stores: Path, encoder, name: str = "net", **options):
    return hs.embed(stores, encoder, name, PATCH_PX, UM_PER_PX, progress=False, **options)


def test_the_overlapped_loop_gives_the_serial_embeddings(cohort_dir: Path, tmp_path: Path) -> None:
    """Every store's embeddings are the module's on its patches read one batch after the other, bit for bit."""
    stores = _copy(cohort_dir, tmp_path)
    net = _conv_net()
    assert statuses(_embed(stores, net, batch_size=37)) == dict.fromkeys(SAMPLES, "done")
    cohort = hs.open_cohort(stores)
    for sample_id in SAMPLES:
        dataset = cohort.subset([sample_id]).patch_dataset(genes=[], patch_size_px=PATCH_PX, um_per_px=UM_PER_PX)
        keep, _ = select_spots(cohort.path(sample_id), dataset.barcodes, "patches", sample_id)
        indices = np.flatnonzero(keep)
        expected = []
        for start in range(0, len(indices), 37):  # serial: read a batch, encode it, next
            patches = np.stack([dataset[int(i)][0] for i in indices[start : start + 37]])
            with torch.inference_mode():
                expected.append(net(torch.from_numpy(patches).permute(0, 3, 1, 2).float().div_(255)).numpy())
        table = _table(cohort.path(sample_id), "net")
        assert table.obs_names.tolist() == dataset.barcodes[indices].astype(str).tolist()
        np.testing.assert_array_equal(table.X, np.concatenate(expected))


def test_patches_are_read_while_the_encoder_runs(cohort_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The first encoder call waits until two more batches have been read: only a reader running beside it can."""
    from hest_spatialdata.cohort._patches import CohortPatchDataset

    stores = _copy(cohort_dir, tmp_path, ("COHST",))
    read, ahead = [], threading.Event()
    original = CohortPatchDataset.__getitems__

    def counting(self, indices):
        items = original(self, indices)
        read.append(len(indices))
        if len(read) >= 3:
            ahead.set()
        return items

    monkeypatch.setattr(CohortPatchDataset, "__getitems__", counting)
    seen = []

    def encoder(batch):
        if not seen:
            seen.append(ahead.wait(timeout=60))  # never set by a loop that reads, then encodes
        return batch.mean(dim=(2, 3))

    _embed(stores, encoder, "mean", batch_size=100)
    assert seen == [True] and sum(read) == 1554


class _Batches:
    """A dataset of ``n`` 2 x 2 patches (each filled with its index), failing at item ``fail_at`` if given."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at

    def __getitems__(self, indices):
        if self.fail_at is not None and self.fail_at in indices:
            raise OSError(f"chunk of item {self.fail_at} unreadable")
        return [(np.full((2, 2, 3), i, np.uint8),) for i in indices]


def test_the_reader_keeps_order_and_reports_a_failing_store_in_its_place() -> None:
    datasets = {"A": _Batches(10, fail_at=4), "B": _Batches(5), "C": None}

    def open_store(sample_id: str) -> StorePlan:
        if datasets[sample_id] is None:
            raise FileNotFoundError(f"{sample_id}: no spot table")
        return StorePlan(datasets[sample_id], np.arange(datasets[sample_id].n)[::-1])

    got: dict[str, list] = {}
    with BatchReader(["A", "B", "C"], open_store, 3, depth=1) as reader:
        for store in reader.stores():
            got[store.sample_id] = []
            if store.error is not None:
                got[store.sample_id].append(repr(store.error))
                continue
            with pytest.raises(OSError, match="item 4") if store.sample_id == "A" else contextlib.nullcontext():
                for n, batch in store.batches():
                    got[store.sample_id].append(batch[:, 0, 0, 0].tolist())
                    assert n == len(batch)
    assert got["A"] == [[9, 8, 7]]  # then the batch with item 4 fails: the error, in its place
    assert got["B"] == [[4, 3, 2], [1, 0]]
    assert got["C"] == ["FileNotFoundError('C: no spot table')"]


# ------------------------------------------------------------------------------------------- a cohort, unattended


def test_a_failing_store_is_reported_and_the_others_go_on(cohort_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    stores = _copy(cohort_dir, tmp_path / "stores")
    shutil.rmtree(stores / "COHV1.zarr" / "tables" / "table" / "obs")  # a corrupt spot table
    broken = _files(stores / "COHV1.zarr")
    runner = CliRunner()
    args = ["embed", str(stores), "--encoder", "histogram", "--patch-size", str(PATCH_PX), "--um-per-px",
            str(UM_PER_PX), "--quiet", "--summary", str(tmp_path / "run.json")]  # fmt: skip
    ran = runner.invoke(main, args)
    assert ran.exit_code == 1, ran.output
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    (failed,) = [r for r in summary["samples"] if r["status"] == "failed"]
    assert failed["sample_id"] == "COHV1" and failed["store"] == str(stores / "COHV1.zarr") and failed["reason"]
    assert _files(stores / "COHV1.zarr") == broken and sorted(p.name for p in stores.iterdir()) == [
        f"{s}.zarr" for s in SAMPLES
    ]
    assert _table(stores / "COHV2.zarr", "histogram").n_obs == 1554
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "0 done, 2 skipped, 1 failed" in again.output
    other = runner.invoke(main, [*args[:4], "--patch-size", "64", *args[6:], "--id", "COHST"])
    assert other.exit_code == 1
    (reason,) = [r["reason"] for r in json.loads((tmp_path / "run.json").read_text())["samples"]]
    assert "made otherwise (patch_size_px 32, not 64)" in reason and "--overwrite" in reason


class _InterruptedOnCall(torch.nn.Module):
    """The conv net, pressing Ctrl-C on its ``n``-th call (one call per store with a batch this large)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.net, self.calls, self.n = _conv_net(), 0, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.net(x)


def test_an_interrupted_run_leaves_whole_stores_and_a_rerun_finishes(cohort_dir: Path, tmp_path: Path) -> None:
    stores = _copy(cohort_dir, tmp_path / "stores")
    before = {s: _files(stores / f"{s}.zarr") for s in SAMPLES}
    with pytest.raises(KeyboardInterrupt):
        _embed(stores, _InterruptedOnCall(2), batch_size=10_000)
    assert _table(stores / "COHST.zarr", "net").n_obs == 1554  # the first store: complete
    assert {s: _files(stores / f"{s}.zarr") for s in SAMPLES[1:]} == {s: before[s] for s in SAMPLES[1:]}
    assert sorted(p.name for p in stores.iterdir()) == [f"{s}.zarr" for s in SAMPLES]  # nothing half-written
    rerun = _embed(stores, _conv_net(), batch_size=10_000)
    assert statuses(rerun) == {"COHST": "skipped", "COHV1": "done", "COHV2": "done"}


def test_an_interrupted_write_leaves_the_store_as_it_was(cohort_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from hest_spatialdata.benchmark import _embed as embed_module

    stores = _copy(cohort_dir, tmp_path / "stores", ("COHST", "COHV1"))
    before = {s: _files(stores / f"{s}.zarr") for s in ("COHST", "COHV1")}
    consolidate, calls = embed_module._consolidate, []

    def interrupted(store: Path) -> None:
        calls.append(store)
        if len(calls) == 2:  # the second store: its elements moved in and listed, the root not yet consolidated
            raise KeyboardInterrupt
        consolidate(store)

    monkeypatch.setattr(embed_module, "_consolidate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _embed(stores, "histogram")
    first, second = (Path(p).name.removesuffix(".zarr") for p in calls)
    assert _files(stores / f"{second}.zarr") == before[second]  # root attributes and metadata as they were
    assert (stores / f"{first}.zarr" / "tables" / "net_embeddings").is_dir()
    assert sorted(p.name for p in stores.iterdir()) == ["COHST.zarr", "COHV1.zarr"]


# ------------------------------------------------------------------------------------------- bad encoders


class _Broken(torch.nn.Module):
    """The conv net's output spoiled: ``"nan"``/``"inf"`` in one embedding, ``"3d"`` an extra axis."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.net, self.how = _conv_net(), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.how == "3d":
            return y[:, :, None]
        y[1, 3] = float(self.how)
        return y


class _GrowingCallable:
    """A callable whose D grows at its second batch."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return batch.mean(dim=(2, 3)).repeat(1, self.calls)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (_Broken("nan"), r"returned NaN or Inf in 1 of 100 embeddings"),
        (_Broken("inf"), r"returned NaN or Inf in 1 of 100 embeddings"),
        (_Broken("3d"), r"returned shape \(100, 32, 1\) for a batch of 100 patches: it must be \(B, D\)"),
        (_GrowingCallable(), r"returned D=6 after D=3: D must not change"),
        (lambda batch: batch.mean(dim=(1, 2, 3)), r"returned shape \(100,\) for a batch of 100 patches"),
        (lambda batch: batch.mean(dim=(2, 3))[1:], r"returned shape \(99, 3\) for a batch of 100 patches"),
        (lambda batch: np.full((len(batch), 4), np.inf), r"returned NaN or Inf in 100 of 100"),
        (lambda batch: np.full((len(batch), 2), 1e300), r"returned NaN or Inf in 100 of 100 embeddings \(in float32\)"),
    ],
    ids=["nan", "inf", "3d", "growing-D", "1d", "short", "numpy-inf", "float64-overflow"],
)
def test_a_bad_encoder_output_fails_the_store_and_writes_nothing(cohort_dir: Path, tmp_path: Path, encoder,
                                                                 message: str) -> None:  # fmt: skip
    stores = _copy(cohort_dir, tmp_path / "stores", ("COHST",))
    before = _files(stores / "COHST.zarr")
    with pytest.raises(EmbeddingError) as failed:
        _embed(stores, encoder, "bad", batch_size=100)
    text = str(failed.value)
    assert f"encoder 'bad' on sample COHST ({stores / 'COHST.zarr'})" in text
    assert re.search(message, text), text
    assert [r.status for r in failed.value.summary.results] == ["failed"]
    assert _files(stores / "COHST.zarr") == before and [p.name for p in stores.iterdir()] == ["COHST.zarr"]


def test_precision(cohort_dir: Path, tmp_path: Path) -> None:
    stores = _copy(cohort_dir, tmp_path / "stores", ("COHST",))
    _embed(stores, _conv_net(), "fp32")
    _embed(stores, _conv_net(), "bf16", precision="bf16")
    full, half = _table(stores / "COHST.zarr", "fp32"), _table(stores / "COHST.zarr", "bf16")
    assert half.uns["embedding_config"]["precision"] == "bf16" and full.uns["embedding_config"]["precision"] == "fp32"
    assert not np.array_equal(full.X, half.X)  # bf16 ran: 8 bits of mantissa
    np.testing.assert_allclose(half.X, full.X, atol=0.02)
    with pytest.raises(ValueError, match="'fp16' runs on CUDA only; on CPU use 'bf16'"):
        _embed(stores, _conv_net(), "x", precision="fp16")
    with pytest.raises(ValueError, match="encoder 'histogram' is numpy only"):
        _embed(stores, "histogram", "histogram", precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        _embed(stores, _conv_net(), "x", precision="int8")


def test_one_bar_over_the_cohort(cohort_dir: Path, tmp_path: Path, capsys) -> None:
    stores = _copy(cohort_dir, tmp_path / "stores", ("COHST", "COHV1"))
    hs.embed(stores, "histogram", patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, spots="all")
    err = capsys.readouterr().err
    assert err.count("embedding with histogram") == 1 and "3108/3108" in err and "patches/s" in err
