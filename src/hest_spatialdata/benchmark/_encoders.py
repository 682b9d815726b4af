"""Encoders for :func:`~hest_spatialdata.benchmark.embed`: what turns a batch of patches into embeddings.

An :class:`Encoder` takes patches as the patch dataset gives them, ``(B, H, W, 3)`` uint8, and returns ``(B, D)``
float32 numpy. :func:`as_encoder` makes one from what a user passes: a callable on ``(B, 3, H, W)`` floats in
[0, 1] (a torch tensor when torch is installed, else numpy), a torch module, a timm model name, or the name of a
built-in encoder (:data:`BUILTIN_ENCODERS`, numpy only, for CPU runs and tests). torch and timm are imported only
for the encoders that need them (``hest-spatialdata[bench]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

#: Characters spatialdata accepts in an element name; others become ``_`` in an encoder's name.
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Encoder:
    """A patch encoder with the name and version recorded next to its embeddings.

    Parameters
    ----------
    name
        Name of the embeddings (``{name}_embeddings``); valid as a spatialdata element name.
    version
        The encoder's version (its package's, and the weights' tag where known).
    kind
        ``builtin``, ``callable``, ``torch`` or ``timm``.
    run
        ``(B, H, W, 3)`` uint8 -> ``(B, D)`` float32 numpy.
    """

    name: str
    version: str
    kind: str
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Embeddings of ``patches`` ((B, H, W, 3) uint8) as (B, D) float32."""
        out = np.asarray(self.run(patches), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(patches):
            raise ValueError(f"encoder {self.name!r} must return (B, D) for B={len(patches)} patches, got {out.shape}")
        return out


class HistogramEncoder:
    """A small deterministic CPU encoder: per-channel intensity histograms and a fixed random projection of them.

    Each patch gives ``3 x bins`` histogram frequencies (over [0, 1]) plus the channel means and standard
    deviations; a Gaussian projection fixed by ``seed`` maps them to ``dim`` features. Colour and texture
    statistics of H&E, not a foundation model: for trying the pipeline on CPU and for tests.

    Parameters
    ----------
    bins
        Histogram bins per channel.
    dim
        Embedding size.
    seed
        Seed of the projection.
    """

    __version__ = "1"

    def __init__(self, bins: int = 16, dim: int = 64, seed: int = 0) -> None:
        self.bins, self.dim, self.seed = bins, dim, seed
        n_stats = 3 * bins + 6
        self.projection = np.random.default_rng(seed).normal(size=(n_stats, dim)) / np.sqrt(n_stats)

    def __call__(self, batch: Any) -> np.ndarray:
        """``(B, 3, H, W)`` floats in [0, 1] (numpy or torch) -> ``(B, dim)`` float32 numpy."""
        # contiguous: the same sums whatever the layout it comes in (torch's permuted view), and faster ones
        x = np.ascontiguousarray(batch.cpu().numpy() if hasattr(batch, "cpu") else batch, dtype=np.float32)
        flat = x.reshape(x.shape[0], 3, -1)
        levels = np.minimum((flat * self.bins).astype(np.int64), self.bins - 1)
        offsets = (np.arange(x.shape[0])[:, None, None] * 3 + np.arange(3)[None, :, None]) * self.bins
        counts = np.bincount((levels + offsets).ravel(), minlength=x.shape[0] * 3 * self.bins)
        histograms = counts.reshape(x.shape[0], 3 * self.bins) / flat.shape[2]
        stats = np.concatenate([histograms, flat.mean(axis=2), flat.std(axis=2)], axis=1)
        return (stats @ self.projection).astype(np.float32)


#: Built-in encoders by name (numpy only).
BUILTIN_ENCODERS: dict[str, Callable[[], Callable[[Any], np.ndarray]]] = {"histogram": HistogramEncoder}


def as_encoder(encoder: Any, name: str | None = None, device: str | None = None) -> Encoder:
    """An :class:`Encoder` from a built-in name, a timm model name, a torch module or a callable.

    Parameters
    ----------
    encoder
        A name of :data:`BUILTIN_ENCODERS`; another string: a timm model name (``timm.create_model(name,
        pretrained=True, num_classes=0)``, patches normalised with the model's own data config and resized to its
        input size where it differs); a ``torch.nn.Module`` (run in eval mode without gradients); or a callable
        ``(B, 3, H, W) float in [0, 1] -> (B, D)``.
    name
        Name of the embeddings; required for a callable, default the encoder's own name otherwise.
    device
        torch device (``"cuda"``, ``"cpu"``, ...) for torch modules, timm models and callables; ``None``: CPU.

    Raises
    ------
    ValueError
        For a callable without ``name``, or a device without torch.
    TypeError
        For anything else.
    """
    if isinstance(encoder, str) and encoder in BUILTIN_ENCODERS:
        model = BUILTIN_ENCODERS[encoder]()
        return Encoder(_valid_name(name or encoder), _package_version(model), "builtin", _numpy_or_torch(model, device))
    if isinstance(encoder, str):
        from hest_spatialdata.benchmark._torch import timm_encoder

        run, model_version = timm_encoder(encoder, device)
        return Encoder(_valid_name(name or encoder), model_version, "timm", run)
    if _is_torch_module(encoder):
        from hest_spatialdata.benchmark._torch import module_encoder

        return Encoder(
            _valid_name(name or type(encoder).__name__), _package_version(encoder), "torch",
            module_encoder(encoder, device),
        )  # fmt: skip
    if callable(encoder):
        if not name:
            raise ValueError("a callable encoder needs a name for its embeddings (name=...)")
        return Encoder(_valid_name(name), _package_version(encoder), "callable", _numpy_or_torch(encoder, device))
    raise TypeError(f"encoder must be a callable, a torch module or a model name, got {type(encoder).__name__}")


def _numpy_or_torch(function: Callable[[Any], Any], device: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """Run a callable on (B, 3, H, W) floats in [0, 1]: a torch tensor where torch is installed, else numpy."""
    try:
        from hest_spatialdata.benchmark._torch import callable_encoder
    except ImportError:  # no torch: numpy in, numpy out
        if device not in (None, "cpu"):
            raise ValueError(f"device {device!r} needs torch (pip install 'hest-spatialdata[bench]')") from None
        return lambda patches: np.asarray(function(to_unit_floats(patches)))
    return callable_encoder(function, device)


def to_unit_floats(patches: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(obj).__mro__)


def _valid_name(name: str) -> str:
    return _NAME_CHARACTERS.sub("_", name)


def _package_version(obj: Any) -> str:
    """The version of the package defining ``obj`` (and ``obj.__version__`` where it has one)."""
    package = (getattr(obj, "__module__", None) or type(obj).__module__ or "").split(".")[0]
    try:
        text = f"{package} {version(package)}" if package else "unknown"
    except PackageNotFoundError:
        text = package
    own = getattr(obj, "__version__", None)
    return f"{text} ({type(obj).__name__} {own})" if own else text
