from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.conversion.batch import run_batch
from hest_spatialdata.conversion.convert import select_local_ids
from hest_spatialdata.storage.store import PARTIAL_MARK, store_is_complete
from hest_spatialdata.validate import validate

from .helpers import HUB_SAMPLE_IDS, copy_sample

PAIR = ("EXAMPLE1", "EXAMPLE2")


def _convert(*args: str) -> tuple[int, dict, str]:
    """Run ``hest-to-sdata convert ARGS --quiet --summary S`` in this process: (exit code, summary, output)."""
    summary = Path(args[args.index("-o") + 1]) / "summary.json"
    result = CliRunner().invoke(main, ["convert", *args, "--quiet", "--summary", str(summary)], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(summary.read_text()), result.output


def _status(summary: dict) -> dict[str, str]:
    return {s["sample_id"]: s["status"] for s in summary["samples"]}


def test_batch_converts_then_skips_complete_stores(hest_root_pair, tmp_path, monkeypatch):
    out = tmp_path / "out"
    code, summary, output = _convert(str(hest_root_pair), "-o", str(out))
    assert code == 0, output
    assert _status(summary) == {"EXAMPLE1": "done", "EXAMPLE2": "done"}
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert all(s["source_bytes"] > 0 and s["store_bytes"] > 0 for s in summary["samples"])
    assert "2 samples: 2 done" in output
    assert validate(out / "EXAMPLE2.zarr", hest_root_pair).ok  # the copy under another id, against its source
    assert validate(out / "EXAMPLE1.zarr").ok

    # the re-run decides from zarr.json alone: make any conversion attempt an error
    monkeypatch.setattr("hest_spatialdata.storage.store.convert_sample", _must_not_convert)
    code, summary, output = _convert(str(hest_root_pair), "-o", str(out))
    assert code == 0, output
    assert _status(summary) == {"EXAMPLE1": "skipped", "EXAMPLE2": "skipped"}
    assert all(s["reason"] == "store already complete" for s in summary["samples"])


def _must_not_convert(*args, **kwargs):
    raise AssertionError("a complete store was converted again")


def test_a_bad_sample_fails_alone_on_two_workers(hest_root, tmp_path):
    root = copy_sample(hest_root, "EXAMPLE1", tmp_path / "hest", "EXAMPLE1")
    copy_sample(hest_root, "EXAMPLE1", root, "BAD1")
    h5ad = root / "st" / "BAD1.h5ad"
    h5ad.write_bytes(h5ad.read_bytes()[:5000])  # truncated
    out = tmp_path / "out"
    code, summary, output = _convert(str(root), "-o", str(out), "--workers", "2")
    assert code == 1
    assert summary["mode"] == "local-cluster" and summary["workers"] == 2
    assert _status(summary) == {"BAD1": "failed", "EXAMPLE1": "done"}
    bad = next(s for s in summary["samples"] if s["sample_id"] == "BAD1")
    assert "BAD1" in bad["reason"] and "st h5ad unreadable or truncated" in bad["reason"]
    assert "BAD1" in output and "failed" in output
    done = [s for s in summary["samples"] if s["status"] == "done"]
    assert all(s["warm"] for s in done)  # spatialdata imported by the worker plugin, not per sample
    assert all(s["worker"].split(":")[1] != str(os.getpid()) for s in done)
    assert sorted(p.name for p in out.iterdir()) == ["EXAMPLE1.zarr", "summary.json"]  # no partial of BAD1
    assert validate(out / "EXAMPLE1.zarr").ok


def test_a_killed_run_resumes_and_ends_with_valid_stores(hest_root, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hest_spatialdata", "convert", str(hest_root), "-o", str(out)]
    proc = subprocess.Popen([*command, "--workers", "1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    partials: list[Path] = []
    while not partials and proc.poll() is None and time.monotonic() < deadline:
        partials = list(out.glob(f".*{PARTIAL_MARK}*")) if out.is_dir() else []
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partials, f"no partial store seen before the run ended: {proc.stderr.read().decode()[-2000:]}"
    left = list(out.glob(f".*{PARTIAL_MARK}*"))
    assert left  # the killed converter left its partial store behind
    assert not store_is_complete(out / "EXAMPLE1.zarr")

    summary = run_batch(hest_root, out, ["EXAMPLE1"])
    assert [(r.sample_id, r.status) for r in summary.results] == [("EXAMPLE1", "done")]
    assert not list(out.glob(f".*{PARTIAL_MARK}*"))  # the dead run's partial store was removed
    assert validate(out / "EXAMPLE1.zarr", hest_root).ok


def test_scheduler_runs_samples_on_an_existing_dask_cluster(hest_root_pair, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code, summary, output = _convert(str(hest_root_pair), "-o", str(out), "--scheduler", cluster.scheduler_address)
    assert code == 0, output
    assert summary["mode"] == "scheduler"
    assert _status(summary) == {"EXAMPLE1": "done", "EXAMPLE2": "done"}
    workers = {s["worker"] for s in summary["samples"]}
    assert len(workers) == 1 and workers.pop().split(":")[1] != str(os.getpid())
    assert all(s["warm"] for s in summary["samples"])  # one import per worker process, before the first sample
    assert all(validate(out / f"{sample_id}.zarr").ok for sample_id in PAIR)


def test_from_hub_converts_and_deletes_the_downloads(fake_hub, hub_repo, tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "out"
    args = [str(staging), "-o", str(out), "--from-hub", "--delete-downloaded"]
    code, summary, output = _convert(*args, "--id", "ZEN61", "--id", "NCBI680", "--id", "TENX95")
    assert code == 1  # TENX95 has no file on this hub
    assert _status(summary) == {"ZEN61": "done", "NCBI680": "done", "TENX95": "failed"}
    assert "no file of this sample on the hub" in output
    assert sorted(fake_hub.downloads()) == sorted(
        f"{folder}/{i}{suffix}" for i in HUB_SAMPLE_IDS for folder, suffix in _PARTS
    )
    assert not [p for p in staging.rglob("*") if p.is_file() and ".cache" not in p.parts]  # deleted once converted
    assert all(s["download_seconds"] > 0 for s in summary["samples"] if s["status"] == "done")
    assert validate(out / "ZEN61.zarr", hub_repo).ok
    assert validate(out / "NCBI680.zarr").ok

    before = fake_hub.downloads()
    code, summary, _ = _convert(*args, "--species", "mouse", "--organ", "Brain,Other", "--id", "ZEN61,NCBI680")
    assert code == 0
    assert _status(summary) == {"ZEN61": "skipped", "NCBI680": "skipped"}
    assert fake_hub.downloads()[len(before) :] == ["HEST_v1_3_0.csv"]  # the catalog for the filters, no sample file


_PARTS = (("wsis", ".tif"), ("st", ".h5ad"), ("metadata", ".json"))


def test_local_filters_and_usage_errors(hest_root_pair, tmp_path):
    assert select_local_ids(hest_root_pair) == list(PAIR)
    assert select_local_ids(hest_root_pair, technology="Visium", species="mouse") == list(PAIR)
    assert select_local_ids(hest_root_pair, ["EXAMPLE2"], organ="Brain") == ["EXAMPLE2"]
    assert select_local_ids(hest_root_pair, organ="Breast") == []
    runner = CliRunner()
    base = ["convert", str(hest_root_pair), "-o", str(tmp_path / "out")]
    result = runner.invoke(main, [*base, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "exclude each other" in result.output
    result = runner.invoke(main, [*base, "--delete-downloaded", "--workers", "1"])
    assert result.exit_code == 2 and "--from-hub" in result.output
    result = runner.invoke(main, [*base, "--organ", "Breast"])
    assert result.exit_code == 1 and "no sample" in result.output
    result = runner.invoke(main, ["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_from_hub_fetches_only_the_sources_of_the_elements_asked(fake_hub):
    from hest_spatialdata.conversion.convert import plan_from_hub

    files = plan_from_hub(["ZEN61", "TENX95"], elements=["he"]).files
    assert files == {
        "ZEN61": {
            "metadata/ZEN61.json": files["ZEN61"]["metadata/ZEN61.json"],
            "wsis/ZEN61.tif": files["ZEN61"]["wsis/ZEN61.tif"],
        },
        "TENX95": {},
    }
    everything = plan_from_hub(["ZEN61"]).files
    assert sorted(everything["ZEN61"]) == ["metadata/ZEN61.json", "st/ZEN61.h5ad", "wsis/ZEN61.tif"]
    assert not fake_hub.downloads()  # planning lists, it does not download
