"""Checkpoint I/O (mamol.checkpoint): contents, format upgrade, refusal of mismatched or broken files."""
from __future__ import annotations

import pytest
import torch

from mamol import checkpoint
from mamol.errors import CheckpointError
from mamol.module import MaMOLModule
from tests.helpers import remote_info, save_checkpoint, tiny_module


def _trainable(module: MaMOLModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


def test_contents_trainable_tensors_and_what_they_were_made_for(tmp_path):
    module = tiny_module(tmp_path)
    state = module.state_dict()
    assert set(checkpoint.trim(state, module.model, keep_frozen=False)) == checkpoint.trainable_keys(module.model)
    ckpt = {"state_dict": state}
    module.on_save_checkpoint(ckpt)  # clip_random_init=True: the random backbone, which no file can rebuild, stays
    assert set(ckpt["state_dict"]) == set(state)
    meta = ckpt[checkpoint.SECTION]
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["method"] == "mamol"
    assert meta["infos"][0]["task_type"] == "remote" and meta["backbone"]["vit"] == "tiny" and meta["frozen_included"]


def test_round_trip_and_format_1_upgrade(tmp_path):
    source = tiny_module(tmp_path)
    with torch.no_grad():
        for p in source.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    path = save_checkpoint(source, tmp_path / "new.ckpt")
    target = tiny_module(tmp_path)
    target.load_weights(path)
    assert all(torch.equal(a, _trainable(target)[n]) for n, a in _trainable(source).items())

    # The same weights in the layout written before the method registry (format 1) load the same.
    ckpt = torch.load(path, weights_only=True)
    old_names = {"model.method.patterns.image.": "model.pattern."}
    ckpt["state_dict"] = {next((k.replace(new, old) for new, old in old_names.items() if k.startswith(new)), k): v
                          for k, v in ckpt["state_dict"].items()}
    meta = ckpt[checkpoint.SECTION]
    del meta["format_version"], meta["method"]
    for info in meta["infos"]:
        info["loss"] = "ce"
        del info["task_type"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    old_keys = torch.load(tmp_path / "old.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("model.pattern.") for k in old_keys)
    again = tiny_module(tmp_path)
    again.load_weights(tmp_path / "old.ckpt")
    assert all(torch.equal(a, _trainable(again)[n]) for n, a in _trainable(source).items())
    # ... and so does a plain state dict of format 1, without the "model." prefix.
    torch.save({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, tmp_path / "old_plain.pt")
    plain = tiny_module(tmp_path)
    plain.load_weights(tmp_path / "old_plain.pt")
    assert all(torch.equal(a, _trainable(plain)[n]) for n, a in _trainable(source).items())


def test_broken_and_mismatched_checkpoints_are_refused_by_name(tmp_path):
    path = save_checkpoint(tiny_module(tmp_path), tmp_path / "good.ckpt")
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.ckpt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"load_path='.*cut\.ckpt' is not a readable PyTorch checkpoint"):
            tiny_module(tmp_path).load_weights(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match="no such file"):
        tiny_module(tmp_path).load_weights(tmp_path / "absent.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a checkpoint dict, found list"):
        tiny_module(tmp_path).load_weights(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"made for synthetic: .*'hsi': 12.*this run's data is .*'hsi': 3"):
        tiny_module(tmp_path, remote_info(bands=(3, 1))).load_weights(path)
    with pytest.raises(CheckpointError, match="missing trainable tensors"):
        tiny_module(tmp_path, adapter_layers=[1, 2, 3]).load_weights(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt[checkpoint.SECTION]["method"] = "lora"
    torch.save(ckpt, tmp_path / "lora.ckpt")
    with pytest.raises(CheckpointError, match="trained with method='lora', this run builds method='mamol'"):
        tiny_module(tmp_path).load_weights(tmp_path / "lora.ckpt")
