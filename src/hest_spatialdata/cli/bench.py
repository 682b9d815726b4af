"""``embed`` (patch embeddings into stores) and ``benchmark`` (HEST-Benchmark's protocol on them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hest_spatialdata.cli._options import (
    fail,
    filter_options,
    filters_of,
    finish_with_summary,
    id_option,
    out_option,
    quiet_option,
)

if TYPE_CHECKING:
    from hest_spatialdata.cohort import Cohort


def spots_option(what: str) -> Any:
    """``--spots patches|all``: the spots of HEST's patch file (default) or all of the table."""
    return click.option(
        "--spots", type=click.Choice(["patches", "all"]), default="patches", show_default=True,
        help=f"{what}: those of HEST's patch file (the store's 'patches' shapes; all where a store has none), or all.",
    )  # fmt: skip


def _open(stores: tuple[str, ...], sample_ids: tuple[str, ...], filters: dict[str, Any]) -> Cohort:
    """The cohort of STORES (folders, stores or globs) less what the filters leave out; exits on bad input."""
    from hest_spatialdata.cohort import open_cohort
    from hest_spatialdata.cohort._table import store_paths
    from hest_spatialdata.errors import HestInputError

    try:
        paths = [path for source in stores for path in store_paths(source)]
        cohort = open_cohort(paths, ids=sample_ids or None, **filters_of(filters))
    except HestInputError as e:
        fail(str(e))
    if not len(cohort):
        fail("no store matches the filters")
    return cohort


@click.command("embed")
@click.argument("stores", nargs=-1, required=True)
@click.option(
    "--encoder",
    required=True,
    help="A HEST-Benchmark encoder by name (uni, uni2, virchow2, hoptimus0, gigapath, phikon, resnet50, ...: see "
    "docs/benchmark.md), any timm model name (both need [bench]), or 'histogram' (a small CPU encoder).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Local weights file of the encoder (safetensors, or a torch state dict .bin/.pth/.pt); its keys must be "
    "exactly the model's. For phikon and phikon_v2 (transformers models): the model folder, with its config.json. "
    "[default: the registry's files from the Hugging Face Hub (HF_TOKEN for gated models)]",
)
@click.option("--name", default=None, help="Name of the embeddings. [default: the encoder's]")
@click.option("--patch-size", "patch_size_px", type=click.IntRange(8), default=224, show_default=True)
@click.option("--um-per-px", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Patches per encoder call.")
@click.option("--device", default=None, help="torch device, e.g. cuda. [default: cpu]")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
    help="fp16/bf16: the encoder under torch.autocast (CUDA; on CPU bf16 only).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace embeddings of the same name (else those stores are skipped).")
@click.option(
    "--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON summary."
)
@spots_option("Spots embedded")
@id_option("Sample id (repeatable).")
@filter_options
@quiet_option
def embed_command(
    stores: tuple[str, ...],
    encoder: str,
    weights: Path | None,
    name: str | None,
    patch_size_px: int,
    um_per_px: float,
    batch_size: int,
    device: str | None,
    precision: str,
    overwrite: bool,
    summary_path: Path | None,
    spots: str,
    sample_ids: tuple[str, ...],
    quiet: bool,
    **filters: Any,
) -> None:
    """Embed the spots' patches of STORES with an encoder; write {name}_embeddings into each store (sopa's layout).

    Runs unattended over a cohort: one progress bar, a store that fails does not stop the others, stores holding
    complete embeddings of this name and configuration are skipped (so a run cut short is finished by running it
    again), and a summary is printed; the exit code is 1 if any store failed.
    """
    from hest_spatialdata.benchmark._embed import embed
    from hest_spatialdata.benchmark._encoders import as_encoder

    cohort = _open(stores, sample_ids, filters)
    try:
        model = as_encoder(encoder, name, device, weights=weights)  # weights fetched and checked before any store
        summary = embed(
            cohort, model, name=name, patch_size_px=patch_size_px, um_per_px=um_per_px, batch_size=batch_size,
            device=device, precision=precision, spots=spots, overwrite=overwrite, progress=not quiet,
            raise_on_failure=False,
        )  # fmt: skip
    except (ImportError, ValueError) as e:
        fail(str(e))
    finish_with_summary(summary, summary_path)


def _pca_value(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    """``--pca``: a number of components, or ``full`` (no PCA); ``None`` when not given (the preset's)."""
    if value is None:
        return None
    if value.lower() in ("full", "none"):
        return "full"
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r} is neither a number of components (>= 1) nor 'full'")


def _alpha_value(ctx: click.Context, param: click.Parameter, value: str | None) -> float | str | None:
    """``--alpha``: ``hest``, ``tuned`` or a number > 0; ``None`` when not given (the preset's)."""
    if value is None or value in ("hest", "tuned"):
        return value
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise click.BadParameter(f"{value!r} is not 'hest', 'tuned' or a number > 0")
    return number


def _protocol_options(
    preset: str, pca: int | str | None, alpha: float | str | None, pearson: str | None
) -> dict[str, Any]:
    """The options of ``benchmark()``: the preset's, each replaced by the one given."""
    from hest_spatialdata.benchmark._protocol import PROTOCOLS

    options = dict(PROTOCOLS[preset])
    if pca is not None:
        options["pca"] = None if pca == "full" else pca
    return options | {k: v for k, v in (("alpha", alpha), ("pearson", pearson)) if v is not None}


def _compare(result: Any, path: Path) -> bool:
    """Print whether ``result`` and the results file ``path`` are comparable, and what differs; whether they are."""
    from hest_spatialdata.benchmark._result import BenchmarkResult

    try:
        other = BenchmarkResult.from_json(path)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        fail(f"{path}: {e}")
    blocking, differences = result.comparable_with(other), result.differences(other)
    verdict = "comparable" if not blocking else "NOT comparable"
    click.echo(f"{verdict} with {path} ({other.embeddings}: Pearson r {other.pearson_mean:.4f})")
    for key, (mine, theirs) in differences.items():
        mark = "✗" if key in blocking else "·"
        click.echo(f"  {mark} {key}: {_short(mine)} | {_short(theirs)}")
    return not blocking


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


@click.command("benchmark")
@click.argument("stores", nargs=-1)
@click.option("--embeddings", default=None, help="Name of the embeddings (the table {name}_embeddings). [with STORES]")
@out_option("out_dir", "Folder for the results (JSON, CSV, genes JSON, per-gene PNG). [with STORES]", required=False)
@click.option(
    "--genes",
    "genes_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {\"genes\": [...]} (HEST's var_50genes.json). [default: HEST's rule on these samples]",
)
@click.option("--n-folds", type=click.IntRange(2), default=None, help="[default: one per (dataset, patient) group]")
@click.option("--seed", type=int, default=1, show_default=True, help="random_state of PCA and ridge.")
@click.option(
    "--protocol", "preset", type=click.Choice(["hest", "paper-a13", "tuned-alpha", "per-sample"]), default="hest",
    show_default=True, help="A named protocol (docs/benchmark.md); --pca, --alpha and --pearson change one option.",
)  # fmt: skip
@click.option(
    "--pca", metavar="N|full", callback=_pca_value, help="PCA components, or the whole embedding. [hest: 256]"
)
@click.option(
    "--alpha", metavar="hest|tuned|X", callback=_alpha_value,
    help="Ridge alpha: HEST's 100/(dim*genes), tuned on the training samples, or X. [hest: hest]",
)  # fmt: skip
@click.option("--pearson", type=click.Choice(["pooled", "per_sample"]), help="r over the test spots or per sample.")
@click.option(
    "--compare", "compare_paths", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A results JSON to compare with (repeatable); without STORES, two results JSONs compared with each other.",
)  # fmt: skip
@spots_option("Embedded spots benchmarked")
@id_option("Sample id (repeatable).")
@filter_options
def benchmark_command(
    stores: tuple[str, ...],
    embeddings: str | None,
    out_dir: Path | None,
    genes_path: Path | None,
    n_folds: int | None,
    seed: int,
    preset: str,
    pca: int | str | None,
    alpha: float | str | None,
    pearson: str | None,
    compare_paths: tuple[Path, ...],
    spots: str,
    sample_ids: tuple[str, ...],
    **filters: Any,
) -> None:
    """Run HEST-Benchmark's protocol on the embeddings of STORES; print the score, write the results to --out.

    Without STORES, --compare A.json --compare B.json says whether two results files can be compared (exit 1 if
    not) and lists what differs (✗: keeps them from being compared).
    """
    if not stores:
        if len(compare_paths) != 2:
            raise click.UsageError("give STORES (with --embeddings and --out), or two results JSONs to --compare")
        from hest_spatialdata.benchmark._result import BenchmarkResult

        try:
            first = BenchmarkResult.from_json(compare_paths[0])
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            fail(f"{compare_paths[0]}: {e}")
        if not _compare(first, compare_paths[1]):
            raise SystemExit(1)
        return
    if embeddings is None or out_dir is None:
        raise click.UsageError("benchmarking STORES needs --embeddings and --out")
    import matplotlib

    matplotlib.use("Agg")
    from hest_spatialdata.benchmark._protocol import benchmark

    cohort = _open(stores, sample_ids, filters)
    genes = json.loads(genes_path.read_text())["genes"] if genes_path is not None else None
    options = _protocol_options(preset, pca, alpha, pearson)
    try:
        result = benchmark(cohort, embeddings, genes=genes, n_folds=n_folds, seed=seed, spots=spots, **options)
    except (KeyError, ValueError) as e:
        fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results": out_dir / f"{embeddings}_results.json",
        "per gene": out_dir / f"{embeddings}_per_gene.csv",
        "genes": out_dir / f"{embeddings}_genes.json",
        "plot": out_dir / f"{embeddings}_per_gene.png",
    }
    result.to_json(files["results"])
    result.to_csv(files["per gene"])
    files["genes"].write_text(json.dumps({"genes": result.genes}, indent=1), encoding="utf-8")
    result.plot(files["plot"])
    protocol = result.protocol["preset"] or ", ".join(f"{k} {result.protocol[k]}" for k in options)
    click.echo(
        f"{embeddings}: Pearson r {result.pearson_mean:.4f} ± {result.pearson_std:.4f} over {len(result.folds)} "
        f"folds, {len(result.genes)} genes, {len(cohort)} samples (protocol {protocol})"
    )
    for what, path in files.items():
        click.echo(f"  {what}: {path}")
    for path in compare_paths:
        _compare(result, path)
