"""The encoders that need torch (and timm): imported only when one is used (``hest-spatialdata[bench]``).

Every torch encoder runs in two steps (see :class:`~hest_spatialdata.benchmark._encoders.Encoder`): ``prepare``
(CPU, no model: the uint8 patches as a torch tensor, pinned for a CUDA device, so that a reader thread can run it)
and ``forward`` (copy to the device, [0, 1] floats, resize, normalise, the model, the embedding rule, float32 numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hest_spatialdata.benchmark.encoder_registry import OUTPUT_RULES, SILU, SWIGLU_PACKED, EncoderSpec


@dataclass
class TorchRun:
    """What an :class:`~hest_spatialdata.benchmark._encoders.Encoder` of a torch model is made of."""

    prepare: Callable[[np.ndarray], Any]
    forward: Callable[[Any], np.ndarray]
    device: torch.device
    module: torch.nn.Module | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _prepare(device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    """(B, H, W, 3) uint8 numpy -> the same as a torch tensor (pinned when the device is CUDA: non-blocking copies)."""
    pin = device.type == "cuda"

    def prepare(patches: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(patches))
        return batch.pin_memory() if pin else batch

    return prepare


def _unit_floats(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1] on ``device``."""
    return batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)


def _to_numpy(out: Any) -> np.ndarray:
    return out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def callable_run(function: Callable[[Any], Any], device: str | None) -> TorchRun:
    """Run ``function`` on (B, 3, H, W) float32 tensors in [0, 1] on ``device``, without gradients."""
    target = torch.device(device or "cpu")

    def forward(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return _to_numpy(function(_unit_floats(batch, target)))

    return TorchRun(_prepare(target), forward, target)


def module_run(module: torch.nn.Module, device: str | None) -> TorchRun:
    """A torch module in eval mode on ``device`` as an encoder of [0, 1] patches."""
    module.eval().to(torch.device(device or "cpu"))
    run = callable_run(module, device)
    run.module = module
    return run


def resolve_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The registry's keyword arguments with the layer names :data:`SWIGLU_PACKED` and :data:`SILU` as classes."""
    import timm.layers

    layers = {SWIGLU_PACKED: timm.layers.SwiGLUPacked, SILU: torch.nn.SiLU}
    return {key: layers.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}


def build_model(spec: EncoderSpec, pretrained: bool = False) -> torch.nn.Module:
    """``timm.create_model(spec.arch, pretrained=pretrained, **spec.timm_kwargs)`` (on the current torch device)."""
    import timm

    return timm.create_model(spec.arch, pretrained=pretrained, **resolve_kwargs(spec.timm_kwargs))


def embedding(model: torch.nn.Module, rule: str, x: torch.Tensor) -> torch.Tensor:
    """The embedding of normalised inputs ``x`` by ``model``, read as ``rule`` says (:data:`OUTPUT_RULES`)."""
    if rule == "model":
        return model(x)
    if rule == "pool":
        maps = model(x)
        last = maps[-1] if isinstance(maps, (list, tuple)) else maps
        return last.mean(dim=(2, 3))
    tokens = model.forward_features(x)
    if rule == "cls":
        return tokens[:, 0]
    if rule == "cls+mean":
        return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens :].mean(dim=1)], dim=-1)
    raise ValueError(f"unknown output rule {rule!r} (one of {', '.join(OUTPUT_RULES)})")


def resize(x: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    """Resize (B, 3, H, W) to the model's input as the registry says: to ``input_px / crop_pct``, centre crop."""
    size = spec.input_px
    if tuple(x.shape[2:]) == (size, size) and spec.crop_pct == 1:
        return x
    scaled = round(size / spec.crop_pct)
    x = torch.nn.functional.interpolate(x, size=(scaled, scaled), mode=spec.interpolation, antialias=True)
    top = (scaled - size) // 2
    return x[:, :, top : top + size, top : top + size]


def spec_run(
    spec: EncoderSpec, weights: str | Path | None, device: str | None, token: str | bool | None = None
) -> TorchRun:
    """The encoder of a registry model (timm or transformers) described by ``spec``, weights from ``weights``/the hub.

    Raises
    ------
    EncoderWeightsError
        Weights not available (hub refusal, offline) or not those of ``spec``'s architecture.
    """
    from hest_spatialdata.benchmark._weights import file_sha256, load_state_dict, weights_path

    if spec.library == "transformers":
        from hest_spatialdata.benchmark import _transformers

        folder, path = _transformers.model_files(spec, weights, token)
        model = _transformers.build_model(spec, folder, path)
        built_by = _transformers.transformers_config(spec, folder)
    else:
        path = weights_path(spec, weights, token=token)
        model = build_model(spec)
        load_state_dict(model, path, spec)
        built_by = None
    return model_run(model, spec, device, weights_config(spec, path, file_sha256(path), built_by))


def weights_config(
    spec: EncoderSpec, path: Path | None, sha256: str | None, built_by: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What produced the embeddings: registry name, builder, weights file and its sha256, input, output rule.

    ``built_by``: what built the model (default: the timm architecture, its version and keyword arguments).
    """
    if built_by is None:
        built_by = {"timm_arch": spec.arch, "timm_version": version("timm"),
                    "timm_kwargs": {k: str(v) for k, v in spec.timm_kwargs.items()}}  # fmt: skip
    return {
        "registry_name": spec.name,
        "library": spec.library,
        "library_version": version(spec.library),
        **built_by,
        "torch_version": torch.__version__,
        "weights_repo": spec.hub_repo,
        "weights_file": str(path) if path is not None else None,
        "weights_sha256": sha256,
        "output": spec.output,
        "embedding_dim": spec.dim,
        "input_px": spec.input_px,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": spec.interpolation,
        "crop_pct": spec.crop_pct,
    }


def model_run(model: torch.nn.Module, spec: EncoderSpec, device: str | None, config: dict[str, Any]) -> TorchRun:
    """Run ``model`` (eval, on ``device``) on patches resized and normalised as ``spec`` says, read by its rule."""
    target = torch.device(device or "cpu")
    model.eval().to(target)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=target).view(1, 3, 1, 1)

    def forward(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = (resize(_unit_floats(batch, target), spec) - mean) / std
            return _to_numpy(embedding(model, spec.output, x))

    return TorchRun(_prepare(target), forward, target, model, config)


def timm_spec(name: str, model: torch.nn.Module) -> EncoderSpec:
    """An :class:`EncoderSpec` for any timm model ``name`` (built with ``num_classes=0``) from its data config."""
    import timm

    config = timm.data.resolve_model_data_config(model)
    classifier = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier")
    size = config["input_size"][1]
    return EncoderSpec(
        name, name, {"num_classes": 0}, hub_repo=(model.pretrained_cfg or {}).get("hf_hub_id"),
        dim=int(getattr(model, "num_features", 0)), output="model", input_px=int(size),
        mean=tuple(config["mean"]), std=tuple(config["std"]), interpolation=_interpolation(config),
        ignored_keys=(f"{classifier}.",) if isinstance(classifier, str) else (),
        sources=("timm's pretrained_cfg",),
    )  # fmt: skip


def _interpolation(config: dict[str, Any]) -> str:
    return "bicubic" if config.get("interpolation") == "bicubic" else "bilinear"


def timm_run(name: str, weights: str | Path | None, device: str | None) -> tuple[TorchRun, str]:
    """Any timm model ``name`` (no classifier): weights from ``weights``, else timm's own pretrained ones.

    Returns
    -------
    The run and the encoder's version (timm's, the weights' hub id or tag, or the file).
    """
    import timm

    from hest_spatialdata.benchmark._weights import file_sha256, load_state_dict

    model = timm.create_model(name, pretrained=weights is None, num_classes=0)
    spec = timm_spec(name, model)
    path = None
    if weights is not None:
        path = Path(weights)
        load_state_dict(model, path, spec)
    sha = file_sha256(path) if path is not None else None
    pretrained = getattr(model, "pretrained_cfg", {}) or {}
    tag = f"weights {path.name} sha256 {sha[:12]}" if path else pretrained.get("hf_hub_id") or pretrained.get("tag")
    config = weights_config(spec, path, sha)
    return model_run(model, spec, device, config), f"timm {version('timm')} {name} {tag or ''}".strip()
