"""Registry encoders built by transformers (``library="transformers"``: Phikon, Phikon-v2).

As HEST-Benchmark builds them (``ViTModel.from_pretrained("owkin/phikon", add_pooling_layer=False)``,
``AutoModel.from_pretrained("owkin/phikon-v2")``, the class token of ``last_hidden_state``): the registry's class
from the repository's own ``config.json`` (Phikon's ``layer_norm_eps`` is set there, not by the architecture), its
weights by transformers' loader, nothing fetched by transformers itself. The files come from a local model folder
(``--weights DIR``, as ``save_pretrained`` writes it) or from the hub, through the same download, cache, token and
errors as timm models' weights (``_weights.py``). The loaded model is wrapped so that the registry's output rules
read its tokens as they read a timm ViT's (:func:`~hest_spatialdata.benchmark._torch.embedding`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from hest_spatialdata.benchmark._weights import EncoderWeightsError, file_sha256, key_mismatches, weights_path
from hest_spatialdata.benchmark.encoder_registry import TRANSFORMERS_CONFIG, EncoderSpec

#: Weights file names transformers' loader looks for in a model folder, in its order of preference.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


class TokenModel(torch.nn.Module):
    """A transformers vision model seen as a timm ViT: ``forward_features`` gives its tokens.

    Parameters
    ----------
    model
        A transformers model whose output has ``last_hidden_state`` (B, tokens, D): the class token first, then its
        registers (``config.num_register_tokens``), then the patch tokens.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens of normalised inputs ``x`` (B, 3, H, W)."""
        return self.model(pixel_values=x).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class token."""
        return self.forward_features(x)[:, 0]


def model_files(spec: EncoderSpec, weights: str | Path | None, token: str | bool | None) -> tuple[Path, Path]:
    """The folder holding ``config.json`` and the weights of ``spec``, and the weights file in it.

    ``weights``: a model folder, or a weights file whose folder holds ``config.json``; ``None``: both files
    downloaded from ``spec.hub_repo`` (they land in one snapshot folder of the hub cache).

    Raises
    ------
    EncoderWeightsError
        If the folder lacks ``config.json`` or a weights file, or the hub refuses or cannot give them.
    """
    if weights is None:
        weights_file = weights_path(spec, None, token=token)
        config = weights_path(replace(spec, hub_file=TRANSFORMERS_CONFIG), None, token=token)
        if config.parent != weights_file.parent:  # one revision of the repo, both in its snapshot folder
            raise EncoderWeightsError(f"encoder {spec.name!r}: {config} and {weights_file} are not of one revision")
        return weights_file.parent, weights_file
    path = Path(weights).expanduser()
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise EncoderWeightsError(f"encoder {spec.name!r}: weights {path} do not exist")
    if not (folder / TRANSFORMERS_CONFIG).is_file():
        raise EncoderWeightsError(
            f"encoder {spec.name!r} is a transformers model: {folder} holds no {TRANSFORMERS_CONFIG} (pass the model "
            f"folder, with its {TRANSFORMERS_CONFIG} and {' or '.join(WEIGHTS_FILES)}, as save_pretrained writes it)"
        )
    found = [folder / name for name in WEIGHTS_FILES if (folder / name).is_file()]
    if path.is_file() and path.name not in WEIGHTS_FILES or not found:
        raise EncoderWeightsError(
            f"encoder {spec.name!r}: transformers loads the weights of {folder} from {' or '.join(WEIGHTS_FILES)}; "
            f"{'none is there' if not found else f'not from {path.name}'}"
        )
    return folder, path if path.is_file() else found[0]


def build_model(spec: EncoderSpec, folder: Path, weights_file: Path) -> TokenModel:
    """The transformers class ``spec.arch`` with the configuration of ``folder`` and ``weights_file``, strictly.

    Raises
    ------
    EncoderWeightsError
        If the configuration is of another model type, or the weights lack keys of the model, hold keys it does
        not have (but ``spec.ignored_keys``) or shapes that differ.
    """
    import transformers

    model_class = getattr(transformers, spec.arch)
    what = f"encoder {spec.name!r} ({spec.arch})"
    config = _read_config(model_class, folder, what)
    try:
        with _quiet_transformers(transformers):  # its load report and progress bar: the checks below say it
            # shapes that differ are reported below, by key (transformers would raise pointing at its hidden report)
            model, info = model_class.from_pretrained(
                folder, config=config, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True,
                use_safetensors=weights_file.suffix == ".safetensors", **spec.timm_kwargs,
            )  # fmt: skip
    except (OSError, RuntimeError, ValueError) as e:  # an unreadable file
        raise EncoderWeightsError(f"{what}: cannot load the weights {weights_file}: {type(e).__name__}: {e}") from e
    unexpected = [k for k in info["unexpected_keys"] if not spec.ignored_keys or not k.startswith(spec.ignored_keys)]
    missing, shapes = sorted(map(str, info["missing_keys"])), sorted(map(_shape_text, info["mismatched_keys"]))
    if missing or unexpected or shapes:
        raise EncoderWeightsError(f"{what}: the weights {weights_file} are not this model's: "
                                  + key_mismatches(missing, sorted(unexpected), shapes))  # fmt: skip
    return TokenModel(model.float().eval())  # float32, as the patches are, whatever dtype the folder was saved in


def _shape_text(mismatch: Any) -> str:
    """A shape mismatch as transformers reports it, ``(key, checkpoint shape, model shape)``, as text."""
    if isinstance(mismatch, tuple) and len(mismatch) == 3:
        key, stored, expected = mismatch
        return f"{key} {tuple(stored)} (model {tuple(expected)})"
    return str(mismatch)


@contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _read_config(model_class: Any, folder: Path, what: str) -> Any:
    path = folder / TRANSFORMERS_CONFIG
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EncoderWeightsError(f"{what}: cannot read {path}: {type(e).__name__}: {e}") from e
    expected = model_class.config_class.model_type
    if values.get("model_type") != expected:
        raise EncoderWeightsError(
            f"{what}: {path} is the configuration of a {values.get('model_type')!r} model, not of a {expected!r} one"
        )
    return model_class.config_class.from_dict(values)


def transformers_config(spec: EncoderSpec, folder: Path) -> dict[str, Any]:
    """What built the model, for the embeddings' config: the transformers class and version, the config file."""
    return {
        "transformers_class": spec.arch,
        "transformers_version": version("transformers"),
        "model_kwargs": {k: str(v) for k, v in spec.timm_kwargs.items()},
        "config_file": str(folder / TRANSFORMERS_CONFIG),
        "config_sha256": file_sha256(folder / TRANSFORMERS_CONFIG),
    }
