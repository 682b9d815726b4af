"""The encoders that need torch (and timm): imported only when one is used (``hest-spatialdata[bench]``)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import torch


def callable_encoder(function: Callable[[Any], Any], device: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """Run ``function`` on (B, 3, H, W) float32 tensors in [0, 1] on ``device``, without gradients."""
    target = torch.device(device or "cpu")

    def run(patches: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(patches).to(target).permute(0, 3, 1, 2).float().div_(255)
        with torch.inference_mode():
            out = function(batch)
        return out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    return run


def module_encoder(module: torch.nn.Module, device: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """A torch module in eval mode on ``device`` as an encoder of [0, 1] patches."""
    module.eval().to(torch.device(device or "cpu"))
    return callable_encoder(module, device)


def timm_encoder(name: str, device: str | None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A timm model (pretrained weights, no classifier) with its own data config's resize and normalisation.

    Returns
    -------
    The encoder and its version (timm's, and the weights' hub id or tag).
    """
    import timm

    model = timm.create_model(name, pretrained=True, num_classes=0)
    config = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    size = tuple(config["input_size"][1:])
    target = torch.device(device or "cpu")
    mean, std = mean.to(target), std.to(target)
    model.eval().to(target)

    def normalised(batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[2:]) != size:
            batch = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", antialias=True)
        return model((batch - mean) / std)

    weights = getattr(model, "pretrained_cfg", {}) or {}
    tag = weights.get("hf_hub_id") or weights.get("tag") or ""
    return callable_encoder(normalised, device), f"timm {version('timm')} {name} {tag}".strip()
