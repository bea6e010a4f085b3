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
    del meta["format_version"], meta["method"], meta["options"], meta["state_sha256"]  # none of them existed then
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
    with pytest.raises(CheckpointError, match=r"adapter_layers: checkpoint None, this run \[1, 2, 3\]"):
        tiny_module(tmp_path, adapter_layers=[1, 2, 3]).load_weights(path)
    torch.save(torch.load(path, weights_only=True)["state_dict"], tmp_path / "plain.pt")  # no options to compare
    with pytest.raises(CheckpointError, match="missing trainable tensors"):
        tiny_module(tmp_path, adapter_layers=[1, 2, 3]).load_weights(tmp_path / "plain.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt[checkpoint.SECTION]["method"] = "lora"
    torch.save(ckpt, tmp_path / "lora.ckpt")
    with pytest.raises(CheckpointError, match="trained with method='lora', this run builds method='mamol'"):
        tiny_module(tmp_path).load_weights(tmp_path / "lora.ckpt")


def test_a_changed_value_in_a_saved_checkpoint_is_refused_by_its_checksum(tmp_path):
    """Corruption that keeps the file loadable (one tensor element changed, checksum left as saved)."""
    path = save_checkpoint(tiny_module(tmp_path), tmp_path / "good.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.head.weight"][0, 0] += 1.0
    torch.save(ckpt, tmp_path / "changed.ckpt")
    with pytest.raises(CheckpointError, match=r"load_path='.*changed\.ckpt'.*checksum"):
        tiny_module(tmp_path).load_weights(tmp_path / "changed.ckpt")
    # A raw byte flipped inside a tensor's storage: the file stays readable, the checksum catches it.
    data = bytearray(path.read_bytes())
    weight = torch.load(path, weights_only=True)["state_dict"]["model.head.weight"]
    at = bytes(data).find(weight.numpy().tobytes())
    assert at > 0
    data[at + 2] ^= 0x10  # a mantissa bit of the first element
    (tmp_path / "flipped.ckpt").write_bytes(bytes(data))
    assert torch.load(tmp_path / "flipped.ckpt", weights_only=True)  # still loadable
    with pytest.raises(CheckpointError, match=r"load_path='.*flipped\.ckpt'.*checksum"):
        tiny_module(tmp_path).load_weights(tmp_path / "flipped.ckpt")
    tiny_module(tmp_path).load_weights(path)  # the intact file loads


def test_a_checkpoint_without_a_checksum_loads_with_a_warning(tmp_path, caplog):
    path = save_checkpoint(tiny_module(tmp_path), tmp_path / "good.ckpt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt[checkpoint.SECTION]["state_sha256"]  # as saved before checksums existed
    torch.save(ckpt, tmp_path / "old.ckpt")
    with caplog.at_level("WARNING"):
        tiny_module(tmp_path).load_weights(tmp_path / "old.ckpt")
    assert "no checksum" in caplog.text


def test_evaluation_with_other_method_options_is_refused_unless_allowed(tmp_path):
    """top_k and modality_gate change the output of the same weights: refused by name, or allowed and recorded."""
    path = save_checkpoint(tiny_module(tmp_path, top_k=1), tmp_path / "good.ckpt")
    with pytest.raises(CheckpointError, match=r"load_path='.*good\.ckpt'.*top_k: checkpoint 1, this run 2"):
        tiny_module(tmp_path, top_k=2).load_weights(path)
    with pytest.raises(CheckpointError, match=r"modality_gate: checkpoint 'presence', this run 'threshold'"):
        tiny_module(tmp_path, modality_gate="threshold").load_weights(path)
    with pytest.raises(CheckpointError, match=r"missing_fill: checkpoint 'ones', this run 'zeros'"):
        tiny_module(tmp_path, missing_fill="zeros").load_weights(path)
    module = tiny_module(tmp_path, top_k=2, allow_option_change=True)
    module.load_weights(path)
    assert module.option_changes == {"top_k": {"checkpoint": 1, "run": 2}}
    tiny_module(tmp_path, sparse_experts=False).load_weights(path)  # exact: not an option change
