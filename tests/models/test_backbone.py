"""Frozen CLIP backbone: names, the tiny config, weight files, the openai download, clear errors."""
import io
import os
import re
import urllib.error
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from mamol import cli
from mamol.errors import CheckpointError, ConfigError, MissingFileError
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


def one_line(error: Exception) -> str:
    """What run.py prints for ``error`` (a project error: one line on stderr)."""
    out = io.StringIO()
    assert cli.print_error(error, out) == 2
    return out.getvalue()


def test_missing_weights_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="clip_random_init=True"):
        build_clip("tiny")  # no released weights for the tiny config
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbone, "cached_openai_weights", lambda vit: (None, ["/nowhere/ViT-B-16.pt"]))
    with pytest.raises(MissingFileError, match=r"vit='ViT-B/16'.*/nowhere/ViT-B-16\.pt.*HF_HUB_OFFLINE.*"
                                               r"clip_weights=.*network access.*clip_random_init=True"):
        build_clip("ViT-B/16")
    with pytest.raises(MissingFileError, match=r"clip_weights=.*nothing\.pt.*no such file"):
        build_clip("tiny", str(tmp_path / "nothing.pt"))
    with pytest.raises(MissingFileError, match=r"clip_weights=.*no such file"):
        build_clip("tiny", str(tmp_path))  # a folder


@pytest.fixture
def released_tiny(monkeypatch, tmp_path, tiny) -> list[str]:
    """open_clip as if it listed ``openai`` weights of the tiny config at a URL: the real lookup, cache and
    download code, except the network transfer, which writes the tiny weights where open_clip puts a
    downloaded file (``~/.cache/clip``, under an empty home). Returns the URLs fetched."""
    monkeypatch.setenv("HOME", str(tmp_path))
    released = {"url": "https://example.invalid/clip/mamol-tiny.pt"}
    listed = open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: released if (model, tag) == (
        backbone.TINY_NAME, "openai") else listed(model, tag))
    fetched: list[str] = []

    def transfer(url: str, cache_dir: str | None = None) -> str:
        fetched.append(url)
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(tiny.state_dict()), target)
        return str(target)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", transfer)
    return fetched


def test_online_openai_weights_are_downloaded_once_then_cached(monkeypatch, tiny, released_tiny):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    torch.manual_seed(123)  # a different random init, overwritten by the downloaded file
    assert same_weights(build_clip("tiny"), tiny)
    assert released_tiny == ["https://example.invalid/clip/mamol-tiny.pt"]
    assert same_weights(build_clip("tiny"), tiny)  # the next run finds them in open_clip's cache
    assert len(released_tiny) == 1


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_offline_never_downloads(monkeypatch, released_tiny, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(MissingFileError) as err:
        build_clip("tiny")
    assert released_tiny == []
    line = one_line(err.value)
    assert line.startswith("error: no CLIP weights for vit='tiny'") and line.count("\n") == 1
    assert "HF_HUB_OFFLINE is set" in line and "clip_weights=/path" in line and "network access" in line


def test_failed_download_is_one_project_error(monkeypatch, released_tiny):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(url: str, cache_dir: str | None = None) -> str:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution\n" + "detail " * 100)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", no_network)
    with pytest.raises(MissingFileError) as err:
        build_clip("tiny")
    line = one_line(err.value)
    assert line.count("\n") == 1 and "clip_weights=/path" in line and "network access" in line
    assert "downloading them failed (URLError: <urlopen error [Errno -3] Temporary failure in name" in line
    assert len(line) < 1000  # the cause, briefly


def test_cache_lookup_never_downloads():
    path, looked = backbone.cached_openai_weights("ViT-B/16")
    assert any("vit_base_patch16_clip_224.openai" in place for place in looked)
    assert any(place.endswith("ViT-B-16.pt") for place in looked)
    assert path is None or path.is_file()


def test_wrong_files_give_clear_errors(tiny, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError, match=r"clip_weights=.*garbage\.pt.*could not be read as a CLIP checkpoint"):
        build_clip("tiny", garbage)
    for name, data in (("empty.pt", b""), ("cut.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"clip_weights=.*{name}.*could not be read"):
            build_clip("tiny", tmp_path / name)
    state = dict(tiny.state_dict())
    state.pop("visual.proj")
    state["visual.conv1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(CheckpointError, match=r"does not fit vit='tiny'.*missing keys \(visual\.proj\).*unexpected "
                                              r"keys \(extra\.weight\).*visual\.conv1\.weight: file \(3, 3\)"):
        build_clip("tiny", other)
    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(CheckpointError, match="clip_weights=.*not a state dict"):
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
