"""Benchmark: ``hs.embed`` end to end against its two limits, the patch dataset alone and the encoder alone.

Inputs: ``--stores`` (1) stores of ``bench_cohort.py`` (the 0.5 µm/px sample of ``bench_patches.py``, 1,554 Visium
spots each, the slide shared through a symlink), built once in ``benchmarks/_work/``. Each measurement runs in a fresh
subprocess (``_harness.py``), in alternating order over ``--repeat`` rounds:

- ``patches``: the cohort's patch dataset (224 px at 0.5 µm/px), one dataset per store as ``embed`` opens them, every
  spot in ``embed``'s order, read in batches of ``--batch-size`` (``__getitems__``) and stacked: the rate the
  encoder can be fed at;
- ``encoder``: the encoder alone on ``--encoder-patches`` (512) patches read beforehand, batch after batch (on
  ``--device``, with ``--precision``; the host-to-device copy is part of its call): its own rate;
- ``embed``: ``hs.embed(stores, encoder, spots="all", overwrite=True)``: patches, encoder and the atomic write of
  the two elements into every store (every spot, as ``patches`` reads them).

``--encoder resnet18`` (default) is timm's ``resnet18`` with random weights (``pretrained=False``, no classifier: 512
features), given to ``embed`` as a torch module; ``--encoder histogram`` is the package's numpy encoder; ``--encoder
phikon`` is the registry's Phikon (transformers' ViT-B/16, 768 features) with random weights saved once in
``benchmarks/_work/phikon_random/`` and loaded through the registry (``as_encoder("phikon", weights=folder)``). Printed
per run: patches/s, CPU seconds (user+sys of the process) and the 1-minute load around it; then a table with the best
rates and ``embed / min(patches, encoder)`` measured in this run (1.0: reading hidden behind the encoder, nothing lost
around them), with the load, torch's threads, batch size and device. Also per CPU second (user+sys): under load, wall
rates swing with the other processes while CPU time per patch hardly moves, so ``embed CPU / (patches + encoder) CPU``
(1.0: embed costs what reading and encoding cost apart) says what the loop adds whatever the load. ``spatialdata`` is
imported before ``embed`` is timed (the first write would import it: once per process).

Usage::

    python benchmarks/bench_embed.py                         # CPU, resnet18, 1 store, 2 rounds
    python benchmarks/bench_embed.py --device cuda --stores 3 --batch-size 256 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _harness

HERE = Path(__file__).resolve().parent
MODES = ["patches", "encoder", "embed"]
ENCODERS = ("resnet18", "histogram", "phikon")


def _encoder(name: str) -> Any:
    """What ``embed`` is given: timm's resnet18 with random weights (a torch module), the built-in name, or the
    registry's Phikon built from a random model folder."""
    if name == "histogram":
        return "histogram"
    if name == "phikon":
        from hest_spatialdata.benchmark import as_encoder

        return as_encoder("phikon", weights=_random_phikon())
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0)


def _random_phikon() -> Path:
    """A Phikon-sized ViTModel (ViT-B/16 at 224 px) with random weights, as ``save_pretrained`` writes it (once)."""
    folder = HERE / "_work" / "phikon_random"
    if not (folder / "model.safetensors").is_file():
        import torch
        import transformers

        torch.manual_seed(0)
        transformers.ViTModel(transformers.ViTConfig(), add_pooling_layer=False).save_pretrained(folder)
    return folder


def _embed_options(config: dict[str, Any]) -> dict[str, Any]:
    """``embed``'s keywords; the new ones only where set, so that the script also runs on the code before them."""
    options: dict[str, Any] = {"batch_size": config["batch_size"], "device": config["device"]}
    if config["precision"] != "fp32":
        options["precision"] = config["precision"]
    return options


def _torch_info(threads: int | None) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch_threads": None}
    if threads:
        torch.set_num_threads(threads)
    return {"torch_threads": torch.get_num_threads()}


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import numpy as np
    from bench_cohort import cohort_dir

    import hest_spatialdata as hs
    from hest_spatialdata.benchmark import as_encoder

    info = _torch_info(config["threads"])
    stores = cohort_dir(config["stores"]) / "stores"
    cohort = hs.open_cohort(stores)
    batch_size, mode = config["batch_size"], config["mode"]
    if mode == "embed":
        import spatialdata  # noqa: F401 - imported once per process, by the first write: not the loop's cost

        encoder = _encoder(config["encoder"])
        with _harness.Stopwatch() as run:
            hs.embed(
                cohort, encoder, name="bench", spots="all", overwrite=True, progress=False, **_embed_options(config)
            )
        return info | {"n": int(sum(cohort.table["n_spots"])), "s": run.wall, "cpu": run.cpu}
    datasets = [cohort.subset([s]).patch_dataset(genes=[], patch_size_px=224, um_per_px=0.5) for s in cohort]
    if mode == "patches":
        n = 0
        with _harness.Stopwatch() as run:
            for dataset in datasets:
                for start in range(0, len(dataset), batch_size):
                    items = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
                    n += len(np.stack([item[0] for item in items]))
        return info | {"n": n, "s": run.wall, "cpu": run.cpu}
    count = min(config["encoder_patches"], len(datasets[0]))
    patches = np.stack([item[0] for item in datasets[0].__getitems__(list(range(count)))])
    encoder = as_encoder(_encoder(config["encoder"]), "bench", config["device"])
    autocast = _autocast(config["device"], config["precision"])
    encoder(patches[:batch_size])  # warm-up (first-call allocations, cuDNN's choice of kernels)
    with _harness.Stopwatch() as run, autocast:
        for start in range(0, count, batch_size):
            encoder(patches[start : start + batch_size])
    return info | {"n": count, "s": run.wall, "cpu": run.cpu}


def _autocast(device: str | None, precision: str) -> Any:
    """What ``embed`` runs the encoder under for ``precision`` (torch's autocast; fp32: nothing)."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return torch.autocast(torch.device(device or "cpu").type, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=ENCODERS, default="resnet18")
    parser.add_argument("--stores", type=int, default=1, help="stores embedded (each 1,554 spots)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="torch device (cuda); default: CPU")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--encoder-patches", type=int, default=512, help="pre-read patches the encoder alone runs on")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    _harness.run_script(HERE / "bench_cohort.py", "--build", args.stores, capture=False)
    if args.encoder == "phikon":
        _random_phikon()  # once, before any timed child
    print(_harness.machine_text(), flush=True)
    config = {
        "encoder": args.encoder, "stores": args.stores, "batch_size": args.batch_size, "device": args.device,
        "precision": args.precision, "threads": args.threads, "encoder_patches": args.encoder_patches,
    }  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for r, mode in _harness.rounds(MODES, args.repeat):
        run = _harness.run_script(__file__, "--child", json.dumps(config | {"mode": mode}))
        res = run.result | {"per_s": run.result["n"] / run.result["s"], "load": run.load_text}
        runs[mode].append(res)
        print(f"  {mode:>8} run {r}: {json.dumps(res)}", flush=True)
    best = {mode: max(r["per_s"] for r in results) for mode, results in runs.items()}
    per_cpu = {mode: max(r["n"] / r["cpu"] for r in results) for mode, results in runs.items()}
    limit, cpu_limit = min(best["patches"], best["encoder"]), 1 / (1 / per_cpu["patches"] + 1 / per_cpu["encoder"])
    rows = [
        [mode, f"{results[0]['n']:,}", f"{best[mode]:,.0f}", f"{per_cpu[mode]:,.1f}",
         f"{best[mode] / limit:.2f}" if mode == "embed" else "",
         f"{per_cpu[mode] / cpu_limit:.2f}" if mode == "embed" else "", ", ".join(r["load"] for r in results)]
        for mode, results in runs.items()
    ]  # fmt: skip
    _harness.print_table(
        ["what", "patches", "patches/s (best)", "patches per CPU s (best)", "embed / min(patches, encoder)",
         "embed CPU / (patches + encoder) CPU", "load 1-min"],
        rows,
        note=f"{args.encoder} on {args.device or 'cpu'} ({args.precision}), 224 px at 0.5 µm/px, batch of "
        f"{args.batch_size}, torch threads {runs['embed'][0]['torch_threads']}, {args.stores} store(s); "
        f"limit = min(patches, encoder) = {limit:,.0f}/s; embed / limit = {best['embed'] / limit:.2f} "
        "(wall rates: meaningful on a quiet machine; the CPU ratio is the CPU-time cost of reading and encoding "
        "one patch apart over embed's, which load hardly changes)",
    )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _harness.emit(child(json.loads(sys.argv[2])))
    else:
        main()
