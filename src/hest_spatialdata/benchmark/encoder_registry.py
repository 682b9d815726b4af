"""HEST-Benchmark's encoders by name: what builds each one, where its weights are and how its embedding is read.

Pure data (no torch, no timm import): one :class:`EncoderSpec` per model of HEST-Benchmark's model zoo
(``mahmoodlab/HEST`` ``src/hest/bench/cpath_model_zoo/inference_models.py``, the models of its results table) and
the two later ones of its authors' patch-encoder zoo (``mahmoodlab/TRIDENT``
``trident/patch_encoder_models/load.py``: UNI2-h, H-optimus-1). Each fact names its source in ``sources``: the
zoo's code that builds the model (timm architecture and keyword arguments, the eval transform, the output rule,
the local-checkpoint loading) and the model card of its weights.

Phikon and Phikon-v2 are transformers models (``library="transformers"``): the class named in ``arch`` is built from
the repository's own ``config.json`` and loaded by transformers. Models that neither builds from the registry's data
alone (CONCH needs its own package, REMEDIS is a TensorFlow model converted by HEST's own ResNet code, Hibou runs
code from its hub repository, ...) are listed with ``needs``: what running them would take; asking for one fails
with that message.

The table of :data:`ENCODERS` in ``docs/benchmark.md`` is :func:`registry_markdown`'s output (a test compares them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How an encoder's embedding is read from the model's output:
#: ``cls``: the class token of ``forward_features`` (timm ViTs: after the final norm, as ``model(x)`` with
#: ``global_pool="token"``); ``cls+mean``: the class token concatenated with the mean of the patch tokens (registers
#: and class token excluded: the tokens after ``model.num_prefix_tokens``); ``pool``: the spatial mean of the last
#: feature map of a ``features_only`` CNN (HEST's truncated ResNet50); ``model``: the model's own output with
#: ``num_classes=0`` (timm's pooled pre-logits features; any other timm name).
OUTPUT_RULES = ("cls", "cls+mean", "pool", "model")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: H-optimus-0/1 (and H0-mini) normalisation, from their model cards and HEST's/TRIDENT's transforms.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
HIBOU_MEAN = (0.7068, 0.5755, 0.722)
HIBOU_STD = (0.195, 0.2316, 0.1816)
KAIKO_MEAN = (0.5, 0.5, 0.5)
KAIKO_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The libraries that build registry models: ``timm.create_model(arch, **timm_kwargs)``, or the transformers class
#: ``arch`` (``transformers.ViTModel``, ...) from the repository's ``config.json`` and weights.
LIBRARIES = ("timm", "transformers")
#: A transformers model's configuration, next to its weights (on the hub and in a ``save_pretrained`` folder).
TRANSFORMERS_CONFIG = "config.json"

#: Layer classes named in keyword arguments (the registry stays data); ``_torch.py`` resolves exactly these.
SWIGLU_PACKED = "timm.layers.SwiGLUPacked"
SILU = "torch.nn.SiLU"

_HEST_ZOO = "https://github.com/mahmoodlab/HEST/blob/main/src/hest/bench/cpath_model_zoo/inference_models.py"
_TRIDENT_ZOO = "https://github.com/mahmoodlab/TRIDENT/blob/main/trident/patch_encoder_models/load.py"
_HEST_CTRANSPATH = "https://github.com/mahmoodlab/HEST/blob/main/src/hest/bench/cpath_model_zoo/ctranspath/ctran.py"
_HEST_REMEDIS = "https://github.com/mahmoodlab/HEST/blob/main/src/hest/bench/cpath_model_zoo/remedis/remedis_models.py"


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder: what builds it, where its weights are, what it expects and which output is the embedding.

    Parameters
    ----------
    name
        Registry name (``--encoder NAME``); the embeddings' default name.
    arch
        timm architecture name (``timm.create_model(arch, pretrained=False, **timm_kwargs)``), or for
        ``library="transformers"`` the transformers model class (``"ViTModel"``, ``"Dinov2Model"``).
    timm_kwargs
        Keyword arguments of ``timm.create_model`` (layer classes as the strings :data:`SWIGLU_PACKED`,
        :data:`SILU`), or of the transformers class's ``from_pretrained`` (``add_pooling_layer=False``).
    hub_repo, hub_file
        Hugging Face Hub model repository of the weights and the weights file in it (a torch state dict or
        safetensors of exactly ``arch`` with ``timm_kwargs``; for a transformers model, the repository's
        :data:`TRANSFORMERS_CONFIG` is downloaded beside it).
    dim
        Embedding dimension.
    output
        Which output is the embedding, one of :data:`OUTPUT_RULES`.
    input_px, um_per_px
        Input size (square, px) and resolution of the patches the authors' benchmark feeds it (HEST-Benchmark: 224
        px at 0.5 µm/px, 112 µm).
    mean, std
        Normalisation of [0, 1] RGB.
    interpolation, crop_pct
        Resize of a patch of another size (``bilinear`` or ``bicubic``, antialiased): to ``input_px / crop_pct``,
        then the central ``input_px``. ``crop_pct < 1`` applies to every patch (GigaPath's eval transform resizes
        224 px patches to 256 and crops the centre).
    ignored_keys
        Prefixes of checkpoint keys the model does not use (a truncated network's dropped layers); every other key
        must match the model exactly.
    needs
        What this model needs that neither timm nor transformers gives from the registry's data (its own package,
        adapter or hub code); ``None`` where one of them builds it. A model with ``needs`` cannot be run here.
    library
        What builds ``arch``, one of :data:`LIBRARIES`.
    sources
        Where the facts come from (the zoo's code, the model card).
    """

    name: str
    arch: str | None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    hub_repo: str | None = None
    hub_file: str | None = None
    dim: int = 0
    output: str = "cls"
    input_px: int = 224
    um_per_px: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    ignored_keys: tuple[str, ...] = ()
    needs: str | None = None
    sources: tuple[str, ...] = ()
    library: str = "timm"

    @property
    def hub_url(self) -> str | None:
        """The model card of the weights (where gated models' terms are accepted)."""
        return f"https://huggingface.co/{self.hub_repo}" if self.hub_repo else None


def _card(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


_VIRCHOW_KWARGS: dict[str, Any] = {
    "img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375, "global_pool": "",
    "dynamic_img_size": True, "mlp_layer": SWIGLU_PACKED, "act_layer": SILU,
}  # fmt: skip
_HOPTIMUS_KWARGS: dict[str, Any] = {
    "num_classes": 0, "img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": False,
}  # fmt: skip

_SPECS = (
    EncoderSpec(
        "resnet50",
        "resnet50",
        {"features_only": True, "out_indices": [3]},
        hub_repo="timm/resnet50.tv_in1k",
        hub_file="model.safetensors",
        dim=1024,
        output="pool",
        ignored_keys=("layer4.", "fc."),
        sources=(
            _HEST_ZOO + " (ResNet50InferenceEncoder: resnet50.tv_in1k, features_only, out_indices=[3], "
            "AdaptiveAvgPool2d(1); ImageNet normalisation)",
            _card("timm/resnet50.tv_in1k"),
        ),
    ),
    EncoderSpec(
        "ctranspath",
        None,
        needs="CTransPath's Swin with its ConvStem (the timm_ctp package and HEST's ctran.py adapter); not built here",
        hub_repo="MahmoodLab/hest-bench",
        dim=768,
        output="model",
        sources=(_HEST_ZOO, _HEST_CTRANSPATH),
    ),
    EncoderSpec(
        "phikon",
        "ViTModel",
        {"add_pooling_layer": False},
        hub_repo="owkin/phikon",
        hub_file="pytorch_model.bin",
        dim=768,
        output="cls",
        ignored_keys=("pooler.",),
        library="transformers",
        sources=(
            _HEST_ZOO + " (PhikonInferenceEncoder: ViTModel.from_pretrained('owkin/phikon', add_pooling_layer=False), "
            "last_hidden_state[:, 0]; ImageNet normalisation)",
            _card("owkin/phikon"),
        ),
    ),
    EncoderSpec(
        "phikon_v2",
        "Dinov2Model",
        hub_repo="owkin/phikon-v2",
        hub_file="model.safetensors",
        dim=1024,
        output="cls",
        library="transformers",
        sources=(
            _HEST_ZOO + " (Phikon-v2: AutoModel.from_pretrained('owkin/phikon-v2'), last_hidden_state[:, 0])",
            _card("owkin/phikon-v2"),
        ),
    ),
    EncoderSpec(
        "h0_mini",
        None,
        needs="its hub config (timm 'hf-hub:bioptimus/H0-mini' with mlp_layer=SwiGLUPacked, "
        "act_layer=SiLU): its architecture's keyword arguments are published only in that gated config, so no "
        "local build is registered here",
        hub_repo="bioptimus/H0-mini",
        dim=768,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        sources=(_HEST_ZOO + " (H0MiniInferenceEncoder: CLS token)", _card("bioptimus/H0-mini")),
    ),
    EncoderSpec(
        "hibou_large",
        None,
        needs="the code of its hub repository (AutoModel.from_pretrained('histai/hibou-L', trust_remote_code=True): "
        "its Dinov2ModelWithRegisters is defined there, not in transformers); not run here",
        hub_repo="histai/hibou-L",
        dim=1024,
        mean=HIBOU_MEAN,
        std=HIBOU_STD,
        interpolation="bicubic",
        sources=(_HEST_ZOO, _TRIDENT_ZOO + " (HIBOU_MEAN/STD)", _card("histai/hibou-L")),
    ),
    EncoderSpec(
        "kaiko_base_8",
        "vit_base_patch8_224",
        {"num_classes": 0, "dynamic_img_size": True},
        hub_repo="1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
        hub_file="model.safetensors",
        dim=768,
        output="cls",
        mean=KAIKO_MEAN,
        std=KAIKO_STD,
        sources=(
            _HEST_ZOO + " (KaikoBase8InferenceEncoder: forward_features[:, 0], mean=std=0.5)",
            _TRIDENT_ZOO + " (KaikoB8InferenceEncoder: the timm port of kaiko-ai's ViT-B/8)",
            "https://github.com/kaiko-ai/towards_large_pathology_fms",
        ),
    ),
    EncoderSpec(
        "remedis",
        None,
        needs="HEST's REMEDIS adapter (a ResNet-152x2 with standardised convolutions loading the "
        "TensorFlow checkpoint converted to torch, path-152x2-remedis-m_torch.pth); not built here",
        dim=4096,
        output="model",
        sources=(_HEST_ZOO, _HEST_REMEDIS),
    ),
    EncoderSpec(
        "conch_v1",
        None,
        needs="the conch package (pip install git+https://github.com/Mahmoodlab/CONCH.git; "
        "create_model_from_pretrained('conch_ViT-B-16', 'hf_hub:MahmoodLab/conch'), "
        "encode_image(proj_contrast=False, normalize=False))",
        hub_repo="MahmoodLab/CONCH",
        dim=512,
        output="model",
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        sources=(_HEST_ZOO, _card("MahmoodLab/CONCH")),
    ),
    EncoderSpec(
        "uni_v1",
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        hub_repo="MahmoodLab/UNI",
        hub_file="pytorch_model.bin",
        dim=1024,
        output="cls",
        sources=(
            _HEST_ZOO + " (UNIInferenceEncoder)",
            _TRIDENT_ZOO + " (UNIInferenceEncoder: timm_kwargs, strict local load)",
            _card("MahmoodLab/UNI"),
        ),
    ),
    EncoderSpec(
        "uni2",
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "mlp_layer": SWIGLU_PACKED,
            "act_layer": SILU,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        hub_repo="MahmoodLab/UNI2-h",
        hub_file="pytorch_model.bin",
        dim=1536,
        output="cls",
        sources=(_TRIDENT_ZOO + " (UNIv2InferenceEncoder: timm_kwargs, strict local load)", _card("MahmoodLab/UNI2-h")),
    ),
    EncoderSpec(
        "gigapath",
        "vit_giant_patch14_dinov2",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        hub_repo="prov-gigapath/prov-gigapath",
        hub_file="pytorch_model.bin",
        dim=1536,
        output="cls",
        interpolation="bicubic",
        crop_pct=224 / 256,
        sources=(
            _HEST_ZOO + " (GigaPathInferenceEncoder: Resize(256, bicubic), CenterCrop(224))",
            _TRIDENT_ZOO + " (GigaPathInferenceEncoder: timm_kwargs, strict local load)",
            _card("prov-gigapath/prov-gigapath"),
        ),
    ),
    EncoderSpec(
        "virchow",
        "vit_huge_patch14_224",
        _VIRCHOW_KWARGS,
        hub_repo="paige-ai/Virchow",
        hub_file="pytorch_model.bin",
        dim=2560,
        output="cls+mean",
        interpolation="bicubic",
        sources=(
            _HEST_ZOO + " (VirchowInferenceEncoder: cat(CLS, mean of tokens[:, 1:]))",
            _TRIDENT_ZOO + " (VirchowInferenceEncoder: timm_kwargs)",
            _card("paige-ai/Virchow"),
        ),
    ),
    EncoderSpec(
        "virchow2",
        "vit_huge_patch14_224",
        {**_VIRCHOW_KWARGS, "reg_tokens": 4},
        hub_repo="paige-ai/Virchow2",
        hub_file="pytorch_model.bin",
        dim=2560,
        output="cls+mean",
        interpolation="bicubic",
        sources=(
            _HEST_ZOO + " (Virchow2InferenceEncoder: cat(CLS, mean of tokens[:, 5:]), 4 registers skipped)",
            _TRIDENT_ZOO + " (Virchow2InferenceEncoder: timm_kwargs)",
            _card("paige-ai/Virchow2"),
        ),
    ),
    EncoderSpec(
        "hoptimus0",
        "vit_giant_patch14_reg4_dinov2",
        _HOPTIMUS_KWARGS,
        hub_repo="bioptimus/H-optimus-0",
        hub_file="pytorch_model.bin",
        dim=1536,
        output="cls",
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        sources=(
            _HEST_ZOO + " (HOptimus0InferenceEncoder: init_values=1e-5, dynamic_img_size=False)",
            _TRIDENT_ZOO + " (HOptimus0InferenceEncoder: vit_giant_patch14_reg4_dinov2, global_pool='token')",
            _card("bioptimus/H-optimus-0"),
        ),
    ),
    EncoderSpec(
        "hoptimus1",
        "vit_giant_patch14_reg4_dinov2",
        _HOPTIMUS_KWARGS,
        hub_repo="bioptimus/H-optimus-1",
        hub_file="pytorch_model.bin",
        dim=1536,
        output="cls",
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        sources=(_TRIDENT_ZOO + " (HOptimus1InferenceEncoder)", _card("bioptimus/H-optimus-1")),
    ),
)

#: HEST-Benchmark's encoders by registry name.
ENCODERS: dict[str, EncoderSpec] = {spec.name: spec for spec in _SPECS}
#: Other names users know them by (HEST's and TRIDENT's names, the hub's) -> registry name.
ALIASES: dict[str, str] = {
    "uni": "uni_v1", "uni_v2": "uni2", "uni2_h": "uni2", "conch": "conch_v1", "hibou_l": "hibou_large",
    "kaiko_vitb8": "kaiko_base_8", "h_optimus_0": "hoptimus0", "h_optimus_1": "hoptimus1",
}  # fmt: skip


def find_encoder(name: str) -> EncoderSpec | None:
    """The registry entry called ``name`` (or one of :data:`ALIASES`; case, ``-`` and ``_`` alike), else ``None``."""
    key = name.strip().lower().replace("-", "_")
    return ENCODERS.get(ALIASES.get(key, key))


def registry_markdown() -> str:
    """The registry as a Markdown table (``docs/benchmark.md`` holds this text; a test keeps them equal)."""
    rows = [
        "| name | architecture | dim | embedding | input | normalisation (mean / std) | weights | needs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in _SPECS:
        crop = f", resize {round(spec.input_px / spec.crop_pct)} + centre crop" if spec.crop_pct != 1 else ""
        weights = f"[{spec.hub_repo}]({spec.hub_url})" + (f" `{spec.hub_file}`" if spec.hub_file else "")
        rows.append(
            f"| `{spec.name}` | {f'{spec.library} `{spec.arch}`' if spec.arch else '-'} | {spec.dim} | {spec.output} | "
            f"{spec.input_px} px at {spec.um_per_px} µm/px, {spec.interpolation}{crop} | "
            f"{_numbers(spec.mean)} / {_numbers(spec.std)} | {weights if spec.hub_repo else '-'} | "
            f"{spec.needs or '-'} |"
        )
    return "\n".join(rows) + "\n"


def sources_markdown() -> str:
    """The sources of every entry, as a Markdown list (``docs/benchmark.md``)."""
    return "".join(f"- `{spec.name}`: " + "; ".join(spec.sources) + "\n" for spec in _SPECS)


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
