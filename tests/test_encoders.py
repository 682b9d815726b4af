"""Encoders with real torch and timm: HEST-Benchmark's registry, weights from local files and the hub.

Nothing is downloaded: the models are built with ``pretrained=False`` (the large ones on torch's ``meta`` device),
their weights are random ones the tests write (safetensors and torch state dicts), and the hub is a loopback server
(``tests/hub_server.py``). The embeddings through :func:`hest_spatialdata.embed` are compared with the same model
run by hand on the dataset's patches (timm directly, the registry's preprocessing written out).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hest_spatialdata as hs
from hest_spatialdata.benchmark import as_encoder
from hest_spatialdata.benchmark.encoder_registry import (
    ENCODERS,
    HOPTIMUS_MEAN,
    HOPTIMUS_STD,
    EncoderSpec,
    find_encoder,
    registry_markdown,
    sources_markdown,
)

from .helpers import import_or_fail_in_ci, statuses

torch = import_or_fail_in_ci("torch")
timm = import_or_fail_in_ci("timm")

PATCH_PX, UM_PER_PX = 32, 4.0  # 128 µm patches of the 2 µm/px test slides (as tests/test_benchmark.py)
#: A tiny ViT through the registry's code path: 2 registers, class token + mean of patch tokens, a patch resized to
#: 64 px (bicubic) and its central 48 px cut (crop_pct 0.75), H-optimus normalisation.
TINY_VIT = EncoderSpec(
    "tiny_vit", "vit_tiny_patch16_224", {"img_size": 48, "reg_tokens": 2, "global_pool": "", "num_classes": 0},
    dim=2 * 192, output="cls+mean", input_px=48, mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD, interpolation="bicubic",
    crop_pct=0.75,
)  # fmt: skip
#: A truncated ResNet18 as HEST's ResNet50 (layer3, spatial mean): the full network's checkpoint, layer4/fc ignored.
TINY_RESNET = EncoderSpec(
    "tiny_resnet", "resnet18", {"features_only": True, "out_indices": [3]}, dim=256, output="pool", input_px=PATCH_PX,
    ignored_keys=("layer4.", "fc."),
)  # fmt: skip


#: Spots embedded: the store's ``patches`` shapes are cut to these many (embed uses those spots), for speed.
SPOTS = 96


@pytest.fixture
def store(cohort_dir: Path, tmp_path: Path) -> Path:
    """A copy of the COHST store whose ``patches`` shapes (the spots embed uses) keep their first :data:`SPOTS`."""
    import spatialdata as sd

    shutil.copytree(cohort_dir / "COHST.zarr", tmp_path / "stores" / "COHST.zarr")
    path = tmp_path / "stores" / "COHST.zarr"
    sdata = sd.read_zarr(path, selection=("shapes",))
    kept = sdata["patches"].iloc[:SPOTS]
    sdata.delete_element_from_disk("patches")
    sdata["patches"] = kept
    sdata.write_element("patches")
    return path


def _files(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in store.rglob("*")
            if p.is_file()}  # fmt: skip


def _patches(store: Path, barcodes) -> np.ndarray:
    """The dataset's patches at ``barcodes`` as the single-store loader cuts them, (N, H, W, 3) uint8."""
    from hest_spatialdata.loaders import PatchDataset

    patches = PatchDataset(store, PATCH_PX, UM_PER_PX, barcodes=barcodes)
    return np.stack([patches.image(i) for i in range(len(patches))])


def _normalised(x, mean, std):
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _tiny_vit_by_hand(state: dict, patches: np.ndarray) -> np.ndarray:
    """TINY_VIT written out: timm model, bicubic resize to 64, centre 48, normalise, cat(CLS, mean of tokens[3:])."""
    model = timm.create_model("vit_tiny_patch16_224", img_size=48, reg_tokens=2, global_pool="", num_classes=0)
    model.load_state_dict(state)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", antialias=True)[:, :, 8:56, 8:56]
    x = _normalised(x, HOPTIMUS_MEAN, HOPTIMUS_STD)
    with torch.no_grad():
        tokens = model.eval().forward_features(x)
    return torch.cat([tokens[:, 0], tokens[:, 3:].mean(1)], dim=1).numpy()


def _tiny_resnet_by_hand(state: dict, patches: np.ndarray) -> np.ndarray:
    """TINY_RESNET written out: the full ResNet18 run to layer3, the spatial mean, ImageNet normalisation."""
    net = timm.create_model("resnet18").eval()
    net.load_state_dict(state)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    x = _normalised(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's
    with torch.no_grad():
        x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
        return net.layer3(net.layer2(net.layer1(x))).mean(dim=(2, 3)).numpy()


def _random_state(arch: str, seed: int, **kwargs) -> dict:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model(arch, **kwargs).state_dict().items()}


def test_local_weights_give_the_model_run_by_hand(store: Path, tmp_path: Path) -> None:
    """The ViT's weights as safetensors, the ResNet's as a torch training checkpoint (the state dict under "model",
    as HEST's CTransPath file)."""
    import spatialdata as sd
    from safetensors.torch import save_file

    vit_state = _random_state("vit_tiny_patch16_224", 1, img_size=48, reg_tokens=2, global_pool="", num_classes=0)
    resnet_state = _random_state("resnet18", 2)  # the full network: layer4 and fc are in the file
    files = {"tiny_vit": tmp_path / "vit.safetensors", "tiny_resnet": tmp_path / "resnet.pth"}
    save_file(vit_state, files["tiny_vit"])
    torch.save({"model": resnet_state, "epoch": 3}, files["tiny_resnet"])
    for spec, state, by_hand in ((TINY_VIT, vit_state, _tiny_vit_by_hand),
                                 (TINY_RESNET, resnet_state, _tiny_resnet_by_hand)):  # fmt: skip
        encoder = as_encoder(spec, weights=files[spec.name])
        assert encoder.kind == "registry" and encoder.embedding_dim == spec.dim and encoder.device == "cpu"
        sha = hashlib.sha256(files[spec.name].read_bytes()).hexdigest()
        assert encoder.config["weights_sha256"] == sha and sha in encoder.version and spec.arch in encoder.version
        assert encoder.config["registry_name"] == spec.name and encoder.config["timm_arch"] == spec.arch
        done = hs.embed(store.parent, encoder, patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, progress=False)
        assert statuses(done) == {"COHST": "done"}
        table = sd.read_zarr(store, selection=("tables",))[f"{spec.name}_embeddings"]
        expected = by_hand(state, _patches(store, table.obs_names))
        assert table.X.dtype == np.float32 and table.X.shape == (SPOTS, spec.dim)
        np.testing.assert_allclose(table.X, expected, rtol=1e-4, atol=1e-5)
        assert sha in table.uns["embedding_config"]["encoder_version"]
        patches = _patches(store, table.obs_names[:5])
        np.testing.assert_array_equal(encoder.forward(encoder.prepare(patches)), encoder(patches))


def test_every_registry_entry_builds_with_its_embedding_dimension() -> None:
    """On torch's meta device (no memory, no weights): the embedding read by the entry's rule has its dimension."""
    from hest_spatialdata.benchmark._encoders import EncoderUnavailableError
    from hest_spatialdata.benchmark._torch import build_model, embedding

    buildable = [spec for spec in ENCODERS.values() if spec.needs is None and spec.library == "timm"]
    assert {s.name for s in buildable} >= {"resnet50", "uni_v1", "uni2", "virchow", "virchow2", "hoptimus0", "gigapath"}
    # built from their repository's config.json (test_phikon_models_from_their_folders_give_hests_recipe)
    by_transformers = {s.name for s in ENCODERS.values() if s.library == "transformers" and s.hub_file and not s.needs}
    assert by_transformers == {"phikon", "phikon_v2"}
    for spec in buildable:
        with torch.device("meta"):
            model = build_model(spec)
            out = embedding(model, spec.output, torch.empty(2, 3, spec.input_px, spec.input_px))
        assert tuple(out.shape) == (2, spec.dim), spec.name
        assert spec.hub_repo and spec.hub_file and spec.sources, spec.name
    for spec in ENCODERS.values():
        if spec.needs is not None:
            with pytest.raises(EncoderUnavailableError, match=f"encoder '{spec.name}' cannot run here: it needs"):
                as_encoder(spec.name)
    assert find_encoder("UNI") is ENCODERS["uni_v1"] and find_encoder("uni-v2") is ENCODERS["uni2"]
    assert ENCODERS["virchow2"].dim == 2560 and ENCODERS["resnet50"].dim == 1024


def test_the_registry_table_in_the_docs_is_the_registry() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "benchmark.md").read_text(encoding="utf-8")
    assert registry_markdown() in docs, "docs/benchmark.md: paste registry_markdown() (see its Encoders section)"
    assert sources_markdown() in docs, "docs/benchmark.md: paste sources_markdown()"


@pytest.fixture
def model_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback hub serving the model repos MahmoodLab/UNI (gated) and test/tiny-vit (open), an empty cache and
    no login; HF_ENDPOINT points at it."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from .hub_server import FakeHub

    (tmp_path / "dataset").mkdir()
    for repo in ("uni", "tiny"):
        (tmp_path / repo).mkdir()
    (tmp_path / "uni" / "pytorch_model.bin").write_bytes(b"never served")
    state = _random_state("vit_tiny_patch16_224", 3, img_size=48, reg_tokens=2, global_pool="", num_classes=0)
    save_file(state, tmp_path / "tiny" / "model.safetensors")
    for variable in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    models = {"MahmoodLab/UNI": tmp_path / "uni", "test/tiny-vit": tmp_path / "tiny"}
    with FakeHub(tmp_path / "dataset", models=models, gated_models=frozenset({"MahmoodLab/UNI"})) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


def test_hub_weights_are_downloaded_once_and_recorded(model_hub) -> None:
    from dataclasses import replace

    spec = replace(TINY_VIT, hub_repo="test/tiny-vit", hub_file="model.safetensors")
    encoder = as_encoder(spec)
    served = model_hub.models["test/tiny-vit"] / "model.safetensors"
    assert encoder.config["weights_sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    assert model_hub.sent("test/tiny-vit/model.safetensors") == served.stat().st_size
    as_encoder(spec)  # from the cache: nothing sent again
    assert model_hub.sent("test/tiny-vit/model.safetensors") == served.stat().st_size


def test_gated_or_offline_weights_fail_with_one_message_and_nothing_written(
    model_hub, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    before = _files(store)
    args = ["embed", str(store), "--encoder", "uni", "--patch-size", str(PATCH_PX), "--um-per-px", "4", "--quiet"]
    runner = CliRunner()
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1, refused.output
    for part in ("encoder 'uni_v1'", "MahmoodLab/UNI (pytorch_model.bin)", "(HTTP 401)", "https://huggingface.co/MahmoodLab/UNI",
                 "accept its terms", "HF_TOKEN", "hf auth login", "--weights PATH"):  # fmt: skip
        assert part in refused.output, (part, refused.output)
    assert "Traceback" not in refused.output
    monkeypatch.setenv("HF_TOKEN", "hf_not_accepted")
    with_token = runner.invoke(main, args)
    assert with_token.exit_code == 1 and "(HTTP 403)" in with_token.output and "accept its terms" in with_token.output
    model_hub.reset_log()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = runner.invoke(main, args)
    assert offline.exit_code == 1, offline.output
    for part in ("encoder 'uni_v1'", "MahmoodLab/UNI", "HF_HUB_OFFLINE", "--weights PATH"):
        assert part in offline.output, (part, offline.output)
    assert model_hub.requests == []  # offline: the hub was not asked
    assert _files(store) == before and sorted(p.name for p in store.parent.iterdir()) == ["COHST.zarr"]


def test_weights_of_another_model_name_the_model_and_the_file(store: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    before = _files(store)
    weights = tmp_path / "resnet18.pth"
    torch.save(_random_state("resnet18", 4), weights)
    args = ["embed", str(store), "--encoder", "resnet50", "--weights", str(weights), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "encoder 'resnet50' (resnet50): the weights file" in result.output and str(weights) in result.output
    assert "missing keys" in result.output and "shapes" in result.output
    assert _files(store) == before
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cannot read the weights file .*broken.safetensors"):
        as_encoder("resnet50", weights=tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="weights are for registry or timm encoders"):
        as_encoder("histogram", weights=weights)


def test_any_timm_name_still_works_with_local_weights(store: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _random_state("resnet18", 5)
    save_file(state, tmp_path / "resnet18.safetensors")
    encoder = as_encoder("resnet18", weights=tmp_path / "resnet18.safetensors")
    assert encoder.kind == "timm" and encoder.embedding_dim == 512
    patches = _patches(store, None)[:8]
    net = timm.create_model("resnet18", num_classes=0).eval()
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    x = torch.nn.functional.interpolate(torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255, size=(224, 224),
                                        mode="bicubic", antialias=True)  # fmt: skip
    x = _normalised(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's
    with torch.no_grad():
        np.testing.assert_allclose(encoder(patches), net(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown encoder 'no_such_model'"):
        as_encoder("no_such_model")


# --------------------------------------------------------------------------------------------- transformers models

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _phikon_folder(folder: Path, seed: int, layers: int = 1) -> Path:
    """A ViT-B-wide Phikon (768, the registry's D) of ``layers`` blocks, random, as ``save_pretrained`` writes it.

    Its checkpoint holds the pooler (as a ViTModel saved with one), and its ``layer_norm_eps`` is not ViTConfig's
    default: the model must be built from this config.json, not from the architecture's defaults.
    """
    transformers = import_or_fail_in_ci("transformers")  # here, not at import: the timm tests run without it
    torch.manual_seed(seed)
    config = transformers.ViTConfig(num_hidden_layers=layers, intermediate_size=256, layer_norm_eps=1e-6)
    transformers.ViTModel(config, add_pooling_layer=True).save_pretrained(folder)
    return folder


def _phikon_v2_folder(folder: Path, seed: int) -> Path:
    """A DINOv2 as wide as Phikon-v2 (1024) with one block, random, at 224 px with 16 px patches."""
    transformers = import_or_fail_in_ci("transformers")  # here, not at import: the timm tests run without it
    torch.manual_seed(seed)
    config = transformers.Dinov2Config(hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, mlp_ratio=1,
                                       image_size=224, patch_size=16)  # fmt: skip
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


def _hest_phikon_by_hand(name: str, folder: Path, patches: np.ndarray) -> np.ndarray:
    """HEST-Benchmark's recipe written out: its from_pretrained call, a bilinear resize to 224, ImageNet's
    normalisation, the class token of last_hidden_state."""
    transformers = import_or_fail_in_ci("transformers")  # here, not at import: the timm tests run without it
    if name == "phikon":
        model = transformers.ViTModel.from_pretrained(folder, add_pooling_layer=False)
    else:
        model = transformers.AutoModel.from_pretrained(folder)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        return model.eval()(pixel_values=_normalised(x, *IMAGENET)).last_hidden_state[:, 0].numpy()


def test_phikon_models_from_their_folders_give_hests_recipe(store: Path, tmp_path: Path) -> None:
    transformers = import_or_fail_in_ci("transformers")  # here, not at import: the timm tests run without it
    import spatialdata as sd

    folders = {"phikon": _phikon_folder(tmp_path / "phikon", 6), "phikon_v2": _phikon_v2_folder(tmp_path / "v2", 7)}
    for name, folder in folders.items():
        spec = ENCODERS[name]
        weights = folder if name == "phikon" else folder / "model.safetensors"  # a folder, or the file in it
        encoder = as_encoder(name, weights=weights)
        assert encoder.kind == "registry" and encoder.embedding_dim == spec.dim
        config = encoder.config
        assert config["library"] == "transformers" and config["transformers_class"] == spec.arch
        served = folder / "model.safetensors"
        assert config["weights_sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
        assert config["config_sha256"] == hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
        assert f"transformers {transformers.__version__} {spec.arch}" in encoder.version
        done = hs.embed(store.parent, encoder, patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, progress=False)
        assert statuses(done) == {"COHST": "done"}
        table = sd.read_zarr(store, selection=("tables",))[f"{name}_embeddings"]
        assert table.X.shape == (SPOTS, spec.dim)
        expected = _hest_phikon_by_hand(name, folder, _patches(store, table.obs_names))
        np.testing.assert_allclose(table.X, expected, rtol=1e-4, atol=1e-4)


def test_phikon_folders_that_are_not_phikon_fail_naming_the_encoder_and_the_folder(store: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    before = _files(store)
    runner = CliRunner()

    def refused(weights: Path, *parts: str) -> None:
        args = ["embed", str(store), "--encoder", "phikon", "--weights", str(weights), "--quiet"]
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        for part in ("encoder 'phikon'", *parts):
            assert part in result.output, (part, result.output)
        assert "Traceback" not in result.output

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(_phikon_folder(tmp_path / "p", 8) / "model.safetensors", bare)
    refused(bare, f"{bare} holds no config.json", "save_pretrained")
    refused(_phikon_v2_folder(tmp_path / "v2", 9), "configuration of a 'dinov2' model, not of a 'vit' one")
    deeper = _phikon_folder(tmp_path / "deeper", 10, layers=2)
    shutil.copy(tmp_path / "p" / "config.json", deeper)  # one block's config, two blocks' weights
    refused(deeper, "are not this model's", "unexpected keys 16")  # the 16 tensors of the second block
    wider = tmp_path / "wider"
    shutil.copytree(tmp_path / "p", wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps(config | {"intermediate_size": 512}))  # the MLP's width
    refused(wider, "are not this model's", "shapes 3", "(256, 768) (model (512, 768))")  # fc1 weight+bias, fc2 weight
    assert _files(store) == before


@pytest.fixture
def phikon_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback hub serving owkin/phikon as HEST reads it (config.json, pytorch_model.bin); no login, no cache."""
    transformers = import_or_fail_in_ci("transformers")  # here, not at import: the timm tests run without it
    import huggingface_hub.constants

    from .hub_server import FakeHub

    (tmp_path / "dataset").mkdir()
    folder = _phikon_folder(tmp_path / "saved", 11)
    repo = tmp_path / "phikon_repo"
    repo.mkdir()
    shutil.copy(folder / "config.json", repo)
    model = transformers.ViTModel.from_pretrained(folder, add_pooling_layer=True)
    torch.save(model.state_dict(), repo / "pytorch_model.bin")  # the repo's original checkpoint format
    for variable in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    with FakeHub(tmp_path / "dataset", models={"owkin/phikon": repo}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


def test_phikon_from_the_hub_downloads_its_config_and_weights_once(phikon_hub, monkeypatch) -> None:
    from hest_spatialdata.benchmark._weights import EncoderWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsError, match="owkin/phikon .*HF_HUB_OFFLINE"):
        as_encoder("phikon")
    assert phikon_hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    encoder = as_encoder("phikon")
    repo = phikon_hub.models["owkin/phikon"]
    for name in ("config.json", "pytorch_model.bin"):
        assert phikon_hub.sent(f"owkin/phikon/{name}") == (repo / name).stat().st_size, name
    assert encoder.config["weights_sha256"] == hashlib.sha256((repo / "pytorch_model.bin").read_bytes()).hexdigest()
    patches = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    again = as_encoder("phikon")  # from the cache: nothing sent again
    assert phikon_hub.sent("owkin/phikon/pytorch_model.bin") == (repo / "pytorch_model.bin").stat().st_size
    np.testing.assert_array_equal(again(patches), encoder(patches))
