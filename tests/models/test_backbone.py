"""Frozen CLIP backbone: names, the tiny config, weight files, clear errors when weights are missing."""
import re
import warnings

import pytest
import torch
from open_clip.transformer import QuickGELU

from mamol.models import backbone
from mamol.models.backbone import build_clip, load_clip_state_dict, resolve_vit


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_clip("tiny", None, True)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_names():
    assert resolve_vit("ViT-B/16") == "ViT-B-16-quickgelu"
    assert resolve_vit("ViT-B-16") == "ViT-B-16-quickgelu"
    assert resolve_vit("tiny") == backbone.TINY_NAME
    with pytest.raises(ValueError, match=r"vit='ViT-H/99'.*ViT-B/16.*tiny"):
        resolve_vit("ViT-H/99")


@pytest.mark.parametrize("vit", ["ViT-H/14", "ViT-B/99", "RN50", "convnext_base", "coca_ViT-B-32", ""])
def test_other_clip_architectures_are_refused_by_the_vit_key(vit):
    """Only the listed ViTs build; any other open_clip model is refused before anything is built, naming ``vit``."""
    with pytest.raises(ValueError, match=rf"^vit={re.escape(repr(vit))} is not supported; expected one of "
                                         r"\[.*'ViT-B/16'.*'tiny'\]$"):
        build_clip(vit, None, True)


@pytest.mark.parametrize("config", ["convnext_base", "coca_ViT-B-32"])
def test_a_listed_name_that_is_not_a_plain_clip_vit_is_refused(monkeypatch, config):
    """A ``vit`` entry pointing at a timm tower (ConvNeXt) or a custom text tower (CoCa) is refused by name."""
    monkeypatch.setitem(backbone.VIT_NAMES, "other", config)
    with pytest.raises(ValueError, match=rf"^vit='other': open_clip config '{config}' is not a plain CLIP ViT$"):
        build_clip("other", None, True)


def test_tiny_config_is_small_frozen_and_quickgelu(tiny):
    v = tiny.visual
    assert v.positional_embedding.shape == (197, 64)  # 224 / 16 = 14, 14 * 14 + 1
    assert len(v.transformer.resblocks) == 4 and v.transformer.resblocks[0].attn.num_heads == 2
    assert v.output_dim == 32 and tiny.token_embedding.num_embeddings == 49408 and tiny.context_length == 77
    assert isinstance(v.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(tiny.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert not any(p.requires_grad for p in tiny.parameters())
    assert not tiny.training


@pytest.mark.parametrize("suffix,wrap", [(".pt", False), (".bin", True), (".safetensors", False)])
def test_state_dict_files_round_trip(tiny, tmp_path, suffix, wrap):
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif wrap:  # DDP prefix + {"state_dict": ...} wrapper, as training scripts save them
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    torch.manual_seed(123)  # a different random init, overwritten by the file
    loaded = build_clip("tiny", str(path), False)
    assert same_weights(loaded, tiny)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_openai_style_jit_archive_round_trips(tiny, tmp_path):
    path = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(tiny), str(path))
    assert backbone._is_torchscript(path)
    assert same_weights(build_clip("tiny", path), tiny)


def test_missing_weights_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="clip_random_init=True"):
        build_clip("tiny")  # no released weights for the tiny config
    monkeypatch.setattr(backbone, "cached_openai_weights", lambda vit: (None, ["/nowhere/ViT-B-16.pt"]))
    with pytest.raises(FileNotFoundError, match=r"vit='ViT-B/16'.*/nowhere/ViT-B-16\.pt.*clip_weights=.*"
                                                r"clip_random_init=True"):
        build_clip("ViT-B/16")
    with pytest.raises(FileNotFoundError, match=r"clip_weights=.*nothing\.pt.*no such file"):
        build_clip("tiny", str(tmp_path / "nothing.pt"))


def test_cache_lookup_never_downloads():
    path, looked = backbone.cached_openai_weights("ViT-B/16")
    assert any("vit_base_patch16_clip_224.openai" in place for place in looked)
    assert any(place.endswith("ViT-B-16.pt") for place in looked)
    assert path is None or path.is_file()


def test_wrong_files_give_clear_errors(tiny, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(ValueError, match=r"garbage\.pt.*could not be read as a CLIP checkpoint"):
        build_clip("tiny", garbage)
    state = dict(tiny.state_dict())
    state.pop("visual.proj")
    state["visual.conv1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ValueError, match=r"does not fit vit='tiny'.*missing keys \(visual\.proj\).*unexpected keys "
                                         r"\(extra\.weight\).*visual\.conv1\.weight: file \(3, 3\)"):
        build_clip("tiny", other)
    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(ValueError, match="not a state dict"):
        load_clip_state_dict(not_a_dict)


@pytest.mark.heavy
def test_vit_b16_shape_and_cached_weights(monkeypatch, tmp_path):
    torch.manual_seed(0)
    model = build_clip("ViT-B/16", None, True)
    assert model.visual.positional_embedding.shape == (197, 768)
    assert len(model.visual.transformer.resblocks) == 12 and model.visual.output_dim == 512
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    path = tmp_path / "open_clip_model.safetensors"
    from safetensors.torch import save_file

    save_file(dict(model.state_dict()), str(path))
    monkeypatch.setattr(backbone, "cached_openai_weights", lambda vit: (path, [str(path)]))
    assert same_weights(build_clip("ViT-B/16"), model)  # no clip_weights, no random init -> the cache
