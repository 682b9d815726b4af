"""An encoder's weights: a local file (``--weights PATH``) or the registry's file on the Hugging Face Hub.

Hub downloads use huggingface_hub's cache and the same token as ``hest-to-sdata download`` (``HF_TOKEN`` or the
stored ``hf auth login``; ``HF_ENDPOINT`` read when called). Gated weights whose terms are not accepted, a missing or
refused token, offline mode (``HF_HUB_OFFLINE``) without a cached copy or an unreachable hub: one
:class:`EncoderWeightsError` naming the model, its repository and what to do. Weights that are not those of the
model's architecture (key or shape mismatch): the same error naming the model and the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hest_spatialdata.benchmark.encoder_registry import EncoderSpec

if TYPE_CHECKING:
    import torch

#: Weights file suffixes read with safetensors; any other file is read as a torch state dict (``.bin``, ``.pth``,
#: ``.pt``, ...).
SAFETENSORS_SUFFIXES = (".safetensors",)
#: Keys a training checkpoint may hold the state dict under.
_NESTED_KEYS = ("state_dict", "model")


class EncoderWeightsError(ValueError):
    """An encoder's weights cannot be had (hub refusal, offline) or are not those of its architecture."""


def weights_path(spec: EncoderSpec, weights: str | Path | None, *, token: str | bool | None = None) -> Path:
    """The local weights file of ``spec``: ``weights`` if given (it must exist), else downloaded from the hub.

    Raises
    ------
    EncoderWeightsError
        If ``weights`` does not exist, or the hub refuses, is unreachable or offline mode has no cached copy.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise EncoderWeightsError(f"encoder {spec.name!r}: {path} is a folder; a timm model's weights are a file")
        if not path.is_file():
            raise EncoderWeightsError(f"encoder {spec.name!r}: weights file {path} does not exist")
        return path
    if not spec.hub_repo or not spec.hub_file:
        raise EncoderWeightsError(f"encoder {spec.name!r} has no hub weights registered: pass --weights PATH")
    return _download(spec, token)


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _download(spec: EncoderSpec, token: str | bool | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    from hest_spatialdata.roots.hub import current_endpoint, http_status, network_errors

    where = f"{spec.hub_repo} ({spec.hub_file})"
    offline = _offline()
    try:
        return Path(
            hf_hub_download(
                spec.hub_repo, spec.hub_file, token=token, endpoint=current_endpoint(), local_files_only=offline
            )
        )
    except RepositoryNotFoundError as e:  # GatedRepoError is one; the hub answers "not found" without a token too
        raise EncoderWeightsError(_refused(spec, where, http_status(e))) from e
    except LocalEntryNotFoundError as e:  # offline (HF_HUB_OFFLINE, or no connection) and not in the cache
        raise EncoderWeightsError(_unreachable(spec, where, offline)) from e
    except HfHubHTTPError as e:
        if http_status(e) in (401, 403):
            raise EncoderWeightsError(_refused(spec, where, http_status(e))) from e
        raise EncoderWeightsError(f"encoder {spec.name!r}: the hub answered {e} for {where}") from e
    except network_errors() as e:
        raise EncoderWeightsError(_unreachable(spec, where, offline)) from e


def _refused(spec: EncoderSpec, where: str, status: int | None) -> str:
    code = f" (HTTP {status})" if status else ""
    return (
        f"encoder {spec.name!r}: the Hugging Face Hub refused the weights {where}{code}. The model is gated: log in at "
        f"{spec.hub_url}, accept its terms of use, create an access token (https://huggingface.co/settings/tokens) "
        "and set it as HF_TOKEN (or run `hf auth login`); or pass --weights PATH to a local copy of the file."
    )


def _unreachable(spec: EncoderSpec, where: str, offline: bool) -> str:
    why = "the hub is unreachable"
    if offline:
        why = "offline mode is on (HF_HUB_OFFLINE) and they are not in the hub cache"
    return (
        f"encoder {spec.name!r}: cannot get the weights {where}: {why}. Download them once online (they are cached), "
        f"from {spec.hub_url}, or pass --weights PATH to a local copy of the file."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a torch state dict, on the CPU.

    A torch file (``.bin``/``.pth``/``.pt``) may hold the state dict under ``state_dict`` or ``model``, as training
    checkpoints do.
    """
    import torch

    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and not _all_tensors(state):
        state = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not _all_tensors(state):
        raise TypeError(f"not a state dict (names -> tensors) but {type(state).__name__}")
    return state


def _all_tensors(state: dict) -> bool:
    import torch

    return all(isinstance(v, torch.Tensor) for v in state.values())


def load_state_dict(model: torch.nn.Module, path: Path, spec: EncoderSpec) -> None:
    """Load ``path`` into ``model``, strictly.

    Every key of the model must be in the file with its shape, and no other key but those under
    ``spec.ignored_keys``.

    Raises
    ------
    EncoderWeightsError
        If the file cannot be read or its keys or shapes are not the model's (naming the model and the file).
    """
    what = f"encoder {spec.name!r} ({spec.arch})"
    try:
        state = read_state_dict(path)
    except Exception as e:  # a corrupt or foreign file: safetensors, pickle and zip errors differ
        raise EncoderWeightsError(f"{what}: cannot read the weights file {path}: {type(e).__name__}: {e}") from e
    state = {k: v for k, v in state.items() if not k.startswith(spec.ignored_keys)} if spec.ignored_keys else state
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]  # fmt: skip
    if missing or unexpected or shapes:
        raise EncoderWeightsError(f"{what}: the weights file {path} is not this model's: "
                                  + key_mismatches(missing, unexpected, shapes))  # fmt: skip
    model.load_state_dict(state, strict=True)


def key_mismatches(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """How a checkpoint's keys differ from a model's, the first three of each kind named."""
    return "; ".join(
        f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
        if keys
    )


def file_sha256(path: Path | None) -> str | None:
    """The sha256 of a file (read in 8 MiB blocks), ``None`` for no file."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while block := file.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
