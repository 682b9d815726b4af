"""Encoders for :func:`~hest_spatialdata.benchmark.embed`: what turns a batch of patches into embeddings.

An :class:`Encoder` takes patches as the patch dataset gives them, ``(B, H, W, 3)`` uint8, and returns ``(B, D)``
float32 numpy. :func:`as_encoder` makes one from what a user passes: a name of HEST-Benchmark's encoders
(:mod:`~hest_spatialdata.benchmark.encoder_registry`; weights from a local file or the hub), a callable on
``(B, 3, H, W)`` floats in [0, 1] (a torch tensor when torch is installed, else numpy), a torch module, a timm model
name, or the name of a built-in encoder (:data:`BUILTIN_ENCODERS`, numpy only, for CPU runs and tests). torch and
timm are imported only for the encoders that need them (``hest-spatialdata[bench]``).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

#: Characters spatialdata accepts in an element name; others become ``_`` in an encoder's name.
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Encoder:
    """A patch encoder with the name and version recorded next to its embeddings.

    ``run(patches) == forward(prepare(patches))``: ``prepare`` is the CPU part without the model (for torch
    encoders: the uint8 patches as a torch tensor, pinned for a CUDA device), safe to run in a reader thread while
    ``forward`` runs the previous batch; ``forward`` copies to the device, resizes, normalises, runs the model and
    reads the embedding. Without them (an ``Encoder`` made from ``run`` alone) ``prepare`` is the identity and
    ``forward`` is ``run``.

    Parameters
    ----------
    name
        Name of the embeddings (``{name}_embeddings``); valid as a spatialdata element name.
    version
        The encoder's version (its package's, the timm architecture and the weights' file and sha256 where known).
    kind
        ``builtin``, ``callable``, ``torch``, ``timm`` or ``registry`` (a name of
        :data:`~hest_spatialdata.benchmark.encoder_registry.ENCODERS`).
    run
        ``(B, H, W, 3)`` uint8 -> ``(B, D)`` float32 numpy.
    prepare, forward
        The two halves of ``run`` (see above); ``None``: identity and ``run``.
    device
        The torch device the model runs on (``"cpu"``, ``"cuda:0"``), ``None`` for numpy encoders.
    embedding_dim
        ``D`` where known before running (registry entries, timm models), else ``None``.
    module
        The torch module, where there is one (for ``embed``'s precision handling), else ``None``.
    config
        What produced the embeddings, for ``uns["embedding_config"]``: for registry and timm encoders the registry
        name, timm architecture and arguments, weights file and its sha256, input size, normalisation, output rule.
    """

    name: str
    version: str
    kind: str
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    prepare: Callable[[np.ndarray], Any] | None = field(default=None, repr=False)
    forward: Callable[[Any], np.ndarray] | None = field(default=None, repr=False)
    device: str | None = None
    embedding_dim: int | None = None
    module: Any = field(default=None, repr=False)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prepare is None:
            self.prepare = _identity
        if self.forward is None:
            self.forward = self.run

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Embeddings of ``patches`` ((B, H, W, 3) uint8) as (B, D) float32."""
        out = np.asarray(self.run(patches), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(patches):
            raise ValueError(f"encoder {self.name!r} must return (B, D) for B={len(patches)} patches, got {out.shape}")
        return out


def _identity(patches: np.ndarray) -> np.ndarray:
    return patches


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
        # C order whatever the input's strides (a permuted torch tensor is channels-last): numpy's sums depend on it
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


class EncoderUnavailableError(ValueError):
    """A registry encoder that needs what this package does not give (its own package or adapter, or torch)."""


def as_encoder(
    encoder: Any,
    name: str | None = None,
    device: str | None = None,
    *,
    weights: str | Path | None = None,
    token: str | bool | None = None,
) -> Encoder:
    """An :class:`Encoder` from a registry name, a built-in name, a timm model name, a torch module or a callable.

    Parameters
    ----------
    encoder
        An :class:`Encoder` (returned as it is, renamed to ``name`` if given); a name of
        :data:`~hest_spatialdata.benchmark.encoder_registry.ENCODERS` (HEST-Benchmark's models, e.g.
        ``"uni_v1"``/``"uni"``, ``"virchow2"``, ``"phikon"``: built with timm or transformers, weights from ``weights``
        or the hub, resized, normalised and read as the registry says) or an
        :class:`~hest_spatialdata.benchmark.encoder_registry.EncoderSpec`; a name of :data:`BUILTIN_ENCODERS`;
        another string: a timm model name (``num_classes=0``;
        weights from ``weights``, else timm's pretrained ones; patches normalised with the model's data config and
        resized to its input size where it differs); a ``torch.nn.Module`` (run in eval mode without gradients);
        or a callable ``(B, 3, H, W) float in [0, 1] -> (B, D)``.
    name
        Name of the embeddings; required for a callable, default the encoder's own name otherwise.
    device
        torch device (``"cuda"``, ``"cpu"``, ...) for torch modules, timm models and callables; ``None``: CPU.
    weights
        A local weights file (safetensors, or a torch state dict ``.bin``/``.pth``/``.pt``) for a registry or timm
        encoder; its keys and shapes must be exactly the model's. For a transformers registry model (Phikon): its
        model folder (``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``, as ``save_pretrained``
        writes it).
    token
        Hugging Face token for the hub weights; default ``HF_TOKEN`` or the stored login.

    Raises
    ------
    EncoderUnavailableError
        For a registry encoder neither timm nor transformers builds (the message says what it needs), or one
        without torch.
    EncoderWeightsError
        (a ``ValueError``) For weights the hub refuses or cannot give (gated, offline), or of another model.
    ValueError
        For a callable without ``name``, a device without torch, an unknown model name, or ``weights`` for an
        encoder that takes none.
    TypeError
        For anything else.
    """
    from hest_spatialdata.benchmark.encoder_registry import EncoderSpec, find_encoder

    if isinstance(encoder, Encoder):  # built already (e.g. by the CLI, before any store is touched)
        if weights is not None:
            raise ValueError(f"encoder {encoder.name!r} is built already: its weights cannot be changed")
        return replace(encoder, name=_valid_name(name)) if name else encoder
    spec = encoder if isinstance(encoder, EncoderSpec) else find_encoder(encoder) if isinstance(encoder, str) else None
    if spec is not None:
        return _registry_encoder(spec, name, device, weights, token)
    if weights is not None and (not isinstance(encoder, str) or encoder in BUILTIN_ENCODERS):
        raise ValueError("weights are for registry or timm encoders (a name), not for this encoder")
    if isinstance(encoder, str) and encoder in BUILTIN_ENCODERS:
        model = BUILTIN_ENCODERS[encoder]()
        return _callable_encoder(_valid_name(name or encoder), _package_version(model), "builtin", model, device)
    if isinstance(encoder, str):
        return _timm_encoder(encoder, name, device, weights)
    if _is_torch_module(encoder):
        from hest_spatialdata.benchmark._torch import module_run

        run = module_run(encoder, device)
        return _torch_encoder(_valid_name(name or type(encoder).__name__), _package_version(encoder), "torch", run)
    if callable(encoder):
        if not name:
            raise ValueError("a callable encoder needs a name for its embeddings (name=...)")
        return _callable_encoder(_valid_name(name), _package_version(encoder), "callable", encoder, device)
    raise TypeError(f"encoder must be a callable, a torch module or a model name, got {type(encoder).__name__}")


def _torch_module() -> Any:
    """``hest_spatialdata.benchmark._torch`` (imports torch), or one clear error saying how to install it."""
    try:
        from hest_spatialdata.benchmark import _torch
    except ImportError as e:
        raise EncoderUnavailableError(
            f"this encoder needs torch and timm (transformers for phikon) ({e}): pip install 'hest-spatialdata[bench]'"
        ) from None
    return _torch


def _registry_encoder(spec: Any, name: str | None, device: str | None, weights: Any, token: Any) -> Encoder:
    if spec.needs:
        raise EncoderUnavailableError(
            f"encoder {spec.name!r} cannot run here: it needs {spec.needs}. Registry encoders that run here: "
            + ", ".join(_buildable_names())
        )
    torch_part = _torch_module()
    if spec.library == "transformers" and not _transformers_installed():
        raise EncoderUnavailableError(
            f"encoder {spec.name!r} is a transformers model: pip install 'hest-spatialdata[bench]' (or transformers)"
        )
    run = torch_part.spec_run(spec, weights, device, token=token)
    config = run.config
    version_text = (
        f"{spec.name}: {spec.library} {config['library_version']} {spec.arch}, weights "
        f"{Path(config['weights_file']).name} sha256 {config['weights_sha256']}"
    )
    return _torch_encoder(_valid_name(name or spec.name), version_text, "registry", run, spec.dim)


def _timm_encoder(model_name: str, name: str | None, device: str | None, weights: Any) -> Encoder:
    torch_part = _torch_module()
    try:
        run, model_version = torch_part.timm_run(model_name, weights, device)
    except RuntimeError as e:
        if "Unknown model" not in str(e):
            raise
        raise ValueError(
            f"unknown encoder {model_name!r}: not a registry encoder ({', '.join(_registry_names())}), a built-in "
            f"one ({', '.join(BUILTIN_ENCODERS)}) or a timm model name"
        ) from None
    return _torch_encoder(_valid_name(name or model_name), model_version, "timm", run, run.config.get("embedding_dim"))


def _torch_encoder(name: str, version_text: str, kind: str, run: Any, dim: int | None = None) -> Encoder:
    return Encoder(
        name, version_text, kind, lambda patches: run.forward(run.prepare(patches)), prepare=run.prepare,
        forward=run.forward, device=str(run.device), embedding_dim=dim or None, module=run.module, config=run.config,
    )  # fmt: skip


def _registry_names() -> list[str]:
    from hest_spatialdata.benchmark.encoder_registry import ENCODERS

    return list(ENCODERS)


def _buildable_names() -> list[str]:
    from hest_spatialdata.benchmark.encoder_registry import ENCODERS

    with_transformers = _transformers_installed()
    return [n for n, spec in ENCODERS.items() if not spec.needs and (spec.library == "timm" or with_transformers)]


def _transformers_installed() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _callable_encoder(name: str, version_text: str, kind: str, function: Callable[[Any], Any], device: Any) -> Encoder:
    """A callable on (B, 3, H, W) floats in [0, 1]: given torch tensors where torch is installed, else numpy."""
    try:
        from hest_spatialdata.benchmark._torch import callable_run
    except ImportError:  # no torch: numpy in, numpy out
        if device not in (None, "cpu"):
            raise ValueError(f"device {device!r} needs torch (pip install 'hest-spatialdata[bench]')") from None
        return Encoder(name, version_text, kind, lambda patches: np.asarray(function(to_unit_floats(patches))))
    return _torch_encoder(name, version_text, kind, callable_run(function, device))


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
