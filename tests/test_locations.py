"""The output location of ``convert``: parsed once where it enters, then passed on as one object."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import hest_spatialdata as hs
from hest_spatialdata.cli import main
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.storage import locations
from hest_spatialdata.storage.store import store_is_complete

#: The modules on convert's path, imported before their bindings of the parser are counted.
CONVERT_PATH = (
    "hest_spatialdata.conversion.convert",
    "hest_spatialdata.conversion.batch",
    "hest_spatialdata.storage.store",
    "hest_spatialdata.storage._publish",
    "hest_spatialdata.storage.locations",
    "hest_spatialdata.cli.convert",
    "hest_spatialdata.cli._options",
)


def _count_parses(monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    """Each call of ``locate`` or ``is_url`` given the string ``text``, in every module that binds them."""
    for name in CONVERT_PATH:
        importlib.import_module(name)
    calls: list[str] = []
    for name in ("locate", "is_url"):
        original = getattr(locations, name)

        def counting(location, *args, _name=name, _original=original, **kwargs):
            if isinstance(location, str) and location == text:
                calls.append(_name)
            return _original(location, *args, **kwargs)

        for module in list(sys.modules.values()):
            if module.__name__.startswith("hest_spatialdata") and getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, counting)
    return calls


def _convert_counting(monkeypatch: pytest.MonkeyPatch, hest_root: Path, out: str) -> list[str]:
    calls = _count_parses(monkeypatch, out)
    summary = hs.convert(hest_root, out, [EXAMPLE_SAMPLE_ID], elements=["he", "spots"])
    parses = list(calls)
    assert summary.counts()["done"] == 1, summary.to_dict()
    assert store_is_complete(summary.results[0].store)
    return parses


def test_a_local_output_folder_is_parsed_once(hest_root: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _convert_counting(monkeypatch, hest_root, str(tmp_path / "stores"))
    assert calls == ["locate", "is_url"]  # the string reaches the parser once (locate, which asks is_url)


def test_an_s3_output_is_parsed_once(hest_root: Path, s3_bucket, monkeypatch) -> None:
    calls = _convert_counting(monkeypatch, hest_root, s3_bucket.url("stores"))
    assert calls == ["locate", "is_url"]


def test_the_cli_parses_an_s3_output_once(hest_root: Path, s3_bucket, monkeypatch) -> None:
    from click.testing import CliRunner

    out = s3_bucket.url("stores")
    calls = _count_parses(monkeypatch, out)
    result = CliRunner().invoke(main, ["convert", str(hest_root), "-o", out, "--elements", "he", "--quiet"])
    assert result.exit_code == 0, result.output
    # click's type tells a URL from a path, then the write check, convert() and the batch share one location
    assert calls == ["is_url", "locate", "is_url"]
    assert store_is_complete(f"{out}/{EXAMPLE_SAMPLE_ID}.zarr")
