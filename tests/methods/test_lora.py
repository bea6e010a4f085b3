"""LoRA: the re-expressed attention equals open_clip's, B = 0 equals the frozen backbone, and the update is
exactly W + (α/r) B A on the chosen weights and blocks."""
import copy

import pytest
import torch

from mamol.errors import ConfigError
from mamol.methods.lora import LoRA, LoRAOptions
from mamol.models.backbone import build_clip
from mamol.models.lora import LoRALinear, OpenAttention, open_attention
from tests.helpers import remote_info, tiny_model


def options(**changes) -> LoRAOptions:
    base = dict(adapter_layers=None, adapter_layers_text=None, lora_rank=4, lora_alpha=8.0,
                lora_targets=("q", "k", "v", "o", "mlp"))
    return LoRAOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_clip("tiny", None, True).double()


def towers(clip, length=24):
    """(name, transformer, tokens, mask) of both tiny towers; the text tower with CLIP's causal mask (the blocks
    take any length; a short one is fast)."""
    g = torch.Generator().manual_seed(1)
    return [("image", clip.visual.transformer, torch.randn(3, length, 64, generator=g, dtype=torch.float64), None),
            ("text", clip.transformer, torch.randn(3, length, 64, generator=g, dtype=torch.float64),
             clip.attn_mask[:length, :length].double())]


def test_open_attention_equals_open_clip_attention(clip):
    for _, transformer, x, mask in towers(clip):
        opened = copy.deepcopy(transformer)
        for block in opened.resblocks:
            assert isinstance(open_attention(block), OpenAttention)
        assert set(opened.state_dict()) == set(transformer.state_dict())  # same names, same frozen tensors
        torch.testing.assert_close(opened(x, attn_mask=mask), transformer(x, attn_mask=mask), rtol=0, atol=1e-12)


def test_zero_B_is_the_frozen_backbone_and_the_update_is_W_plus_scaled_BA(clip):
    for kind, (tower, transformer, x, mask) in zip(("natural", "natural"), towers(clip)):
        adapted = copy.deepcopy(transformer)
        method = LoRA(options(), kind, ("text", "image"))
        method.attach(tower, adapted)
        adapted.double()
        assert [i for i, b in enumerate(adapted.resblocks) if isinstance(b.attn, OpenAttention)] == [2, 3]
        with torch.no_grad():
            torch.testing.assert_close(adapted(x, attn_mask=mask), transformer(x, attn_mask=mask), rtol=0, atol=1e-12)
        # Random B everywhere: the result must be the frozen block with merged weights W + (alpha/r) B A.
        merged = copy.deepcopy(transformer)
        torch.manual_seed(2)
        for i in (2, 3):
            attention, block, target = adapted.resblocks[i].attn, adapted.resblocks[i], merged.resblocks[i]
            with torch.no_grad():
                for j, name in enumerate(("q", "k", "v")):
                    lora = attention.deltas[name]
                    lora.B.normal_()
                    target.attn.in_proj_weight[j * 64:(j + 1) * 64] += lora.scale * lora.B @ lora.A
                for mine, theirs in ((attention.out_proj, target.attn.out_proj), (block.mlp.c_fc, target.mlp.c_fc),
                                     (block.mlp.c_proj, target.mlp.c_proj)):
                    assert isinstance(mine, LoRALinear) and mine.lora.scale == 2.0  # alpha 8 / rank 4
                    mine.lora.B.normal_()
                    theirs.weight += mine.lora.scale * mine.lora.B @ mine.lora.A
        with torch.no_grad():
            out = adapted(x, attn_mask=mask)
            assert (out - transformer(x, attn_mask=mask)).abs().max() > 1e-3
            torch.testing.assert_close(out, merged(x, attn_mask=mask), rtol=1e-9, atol=1e-9)


def test_targets_and_blocks_follow_the_keys():
    net = tiny_model(remote_info(), method="lora")  # defaults: q and v in MaMOL's remote blocks (last half)
    blocks = net.visual.transformer.resblocks
    assert [i for i, b in enumerate(blocks) if b.attn.deltas] == [2, 3]
    assert sorted(blocks[2].attn.deltas) == ["q", "v"] and not isinstance(blocks[2].mlp.c_fc, LoRALinear)
    net = tiny_model(remote_info(), method="lora", lora_targets=["mlp"], adapter_layers=[0])
    assert isinstance(net.visual.transformer.resblocks[0].mlp.c_proj, LoRALinear)
    assert not any(b.attn.deltas for b in net.visual.transformer.resblocks)
    trained = {n for n, p in net.named_parameters() if p.requires_grad and n.startswith("visual.")}
    assert trained == {f"visual.transformer.resblocks.0.mlp.{m}.lora.{ab}" for m in ("c_fc", "c_proj") for ab in "AB"}


@pytest.mark.parametrize("changes,message", [
    (dict(lora_targets=["q", "x"]), r"lora_targets=\['q', 'x'\]"),
    (dict(lora_targets=[]), "non-empty"),
    (dict(lora_rank=0), "lora_rank must be >= 1"),
])
def test_bad_keys_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model(remote_info(), method="lora", **changes)
