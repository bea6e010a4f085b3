"""MaMOL in the image-text host on the tiny backbone: open_clip equivalence, skipped towers ==
compute-and-zero, trainable set."""
import dataclasses

import open_clip
import pytest
import torch

from mamol.errors import ConfigError
from mamol.missing import IMAGE_MISSING, TEXT_MISSING
from mamol.models.adapter import MaMOLAdapter
from mamol.models.backbone import build_clip
from mamol.models.natural import NaturalModel
from tests.helpers import natural_info, outputs_and_grads, tiny_model, zero_output_projections

TEXTS = ["a man walks a dog", "", "drama about a lost city", "cooking pasta with tomatoes", "x", "a cat"]


def model(infos=None, **updates) -> NaturalModel:
    torch.manual_seed(0)
    return tiny_model(infos or [natural_info()], **updates)


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-16")  # the real CLIP BPE tokenizer (context 77), shipped with open_clip


def batch(tokenizer, codes, task="mmimdb", seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = len(codes)
    return {"image": torch.randn(n, 3, 224, 224, generator=g), "text_ids": tokenizer(TEXTS[:n]),
            "missing_type": torch.tensor(codes), "task": task}


def reference_clip(net: NaturalModel):
    ref = build_clip("tiny", None, True)
    ref.load_state_dict({k: v for k, v in net.clip.state_dict().items() if ".adapter." not in k}, strict=True)
    return ref


def test_zeroed_adapters_give_open_clip_encode_image_and_encode_text(tokenizer):
    net = model()
    zero_output_projections(net)
    ref = reference_clip(net)
    data = batch(tokenizer, [0, 0, 0])
    with torch.no_grad():
        feats = net.features(data)  # (3, 64): image then text
        # fp32 tolerance: the host runs the same frozen tensors through OpenAttention, open_clip through MHA
        torch.testing.assert_close(feats[:, :32], ref.encode_image(data["image"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(feats[:, 32:], ref.encode_text(data["text_ids"]), rtol=1e-5, atol=1e-6)


def test_missing_halves_are_zero_image_then_text(tokenizer):
    net = model()
    data = batch(tokenizer, [0, TEXT_MISSING, IMAGE_MISSING])
    with torch.no_grad():
        feats = net.features(data)
    assert feats[0, :32].abs().sum() > 0 and feats[0, 32:].abs().sum() > 0
    assert feats[1, :32].abs().sum() > 0 and feats[1, 32:].abs().sum() == 0  # text missing
    assert feats[2, :32].abs().sum() == 0 and feats[2, 32:].abs().sum() > 0  # image missing


@pytest.mark.parametrize("sparse", [True, False])
def test_skip_missing_equals_compute_and_zero(tokenizer, sparse):
    net = model(sparse_experts=sparse)
    data = batch(tokenizer, [0, 1, 2, 1, 2, 0])
    weight = torch.randn(6, 23)
    net.skip_missing = True
    skip_logits, skip_grads = outputs_and_grads(net, data, lambda logits: (logits * weight).sum())
    net.skip_missing = False
    all_logits, all_grads = outputs_and_grads(net, data, lambda logits: (logits * weight).sum())
    torch.testing.assert_close(skip_logits, all_logits, rtol=1e-5, atol=1e-6)
    for name in skip_grads:
        torch.testing.assert_close(skip_grads[name], all_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_tower_missing_for_the_whole_batch(tokenizer):
    net = model()
    out = net(batch(tokenizer, [IMAGE_MISSING, IMAGE_MISSING]))
    assert out.shape == (2, 23)


@pytest.mark.parametrize("method", ["mamol", "moe_lora"])
def test_a_skipped_tower_leaves_no_aux_loss_of_an_earlier_step(tokenizer, method):
    """With load balancing on, a batch whose rows all miss the text skips the text tower: its layers' balance
    terms are those of no step, not the previous step's (whose graph the backward already freed)."""
    net = model(method=method, load_balance_weight=0.1).train()
    layers = net.method.adapters if method == "mamol" else net.method.layers
    text = [layer for layer in layers if any(layer is m for m in net.clip.transformer.modules())]
    assert text and len(text) < len(layers)
    complete = net(batch(tokenizer, [0, 0])).sum() + net.aux_loss()
    complete.backward()
    assert all(layer.aux_loss is not None for layer in layers)
    no_text = net(batch(tokenizer, [TEXT_MISSING, TEXT_MISSING], seed=1)).sum()
    assert all(layer.aux_loss is None for layer in text)
    (no_text + net.aux_loss()).backward()  # the image tower's fresh terms only


def test_trainable_set_and_no_backbone_gradient(tokenizer):
    net = model()
    net(batch(tokenizer, [0, 1, 2, 0])).sum().backward()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    extras = {"clip.visual.ln_post.weight", "clip.visual.ln_post.bias", "clip.visual.proj", "clip.ln_final.weight",
              "clip.ln_final.bias"}
    assert extras <= trainable
    for name in trainable - extras:
        own = name.startswith(("method.patterns.image.", "method.patterns.text.", "heads."))
        assert own or ".adapter." in name, name
    assert any(n.startswith("clip.visual.transformer.resblocks.3.mlp.adapter.") for n in trainable)
    assert any(n.startswith("clip.transformer.resblocks.2.mlp.adapter.") for n in trainable)
    assert "clip.text_projection" not in trainable
    for name, param in net.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name


def test_one_head_per_task(tokenizer):
    net = model([natural_info("mmimdb", 23), natural_info("food101", 101)])
    assert net(batch(tokenizer, [0, 1], task="food101")).shape == (2, 101)
    assert net(batch(tokenizer, [0, 2], task="mmimdb")).shape == (2, 23)
    with pytest.raises(KeyError, match="hatememes"):
        net(batch(tokenizer, [0], task="hatememes"))


def test_natural_defaults_and_layer_validation():
    net = model()
    adapters = [m for m in net.modules() if isinstance(m, MaMOLAdapter)]
    assert len(adapters) == 4  # last two blocks of each tower
    a = adapters[0]
    assert (a.rank, a.num_dynamic, a.top_k, a.scale) == (16, 4, 2, 0.2)
    with pytest.raises(ConfigError, match=r"adapter_layers_text=\[10, 11\].*4-block"):
        model(adapter_layers_text=[10, 11])
    with pytest.raises(ValueError, match="code order"):
        model([dataclasses.replace(natural_info("food101", 2), modalities=("image", "text"))])


@pytest.mark.heavy
def test_vit_b16_towers(tokenizer):
    torch.manual_seed(0)
    net = tiny_model([natural_info()], vit="ViT-B/16")
    blocks = {n.removesuffix(".adapter"): m.dim for n, m in net.named_modules() if isinstance(m, MaMOLAdapter)}
    assert blocks == {"clip.visual.transformer.resblocks.10.mlp": 768, "clip.visual.transformer.resblocks.11.mlp": 768,
                      "clip.transformer.resblocks.10.mlp": 512, "clip.transformer.resblocks.11.mlp": 512}
    data = batch(tokenizer, [0, 1, 2])
    net.skip_missing = True
    skip = net(data)
    net.skip_missing = False
    assert skip.shape == (3, 23) and net.features(data).shape == (3, 1024)
    torch.testing.assert_close(skip, net(data), rtol=1e-4, atol=1e-5)
