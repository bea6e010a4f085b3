"""MaMOL in the remote host on the tiny backbone: frozen-tower equivalence, skip-missing == compute-and-zero,
trainable set."""
import pytest
import torch

from mamol.errors import ConfigError
from mamol.models.adapter import MaMOLAdapter
from mamol.models.backbone import build_clip
from mamol.models.method import Rows
from mamol.models.remote import RemoteModel
from tests.helpers import outputs_and_grads, remote_info, tiny_model, zero_output_projections


def model(modalities=("hsi", "lidar"), bands=(12, 1), **updates) -> RemoteModel:
    torch.manual_seed(0)
    return tiny_model(remote_info(modalities, bands), **updates)


def batch(codes, modalities=("hsi", "lidar"), bands=(12, 1), patch=14, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {m: torch.randn(len(codes), c, patch, patch, generator=g) for m, c in zip(modalities, bands)}
    out["missing_type"] = torch.tensor(codes)
    out["label"] = torch.zeros(len(codes), dtype=torch.long)
    return out


def test_zeroed_adapters_give_the_frozen_open_clip_tower():
    net = model()
    zero_output_projections(net)
    reference = build_clip("tiny", None, True)
    frozen = {k: v for k, v in net.visual.state_dict().items() if ".adapter." not in k}
    reference.visual.load_state_dict(frozen, strict=True)  # backbone keys are open_clip's own
    image = torch.randn(3, 3, 224, 224)
    tokens = reference.visual.conv1(image).flatten(2).transpose(1, 2)  # CLIP's own patch tokens (3, 196, 64)
    rows = Rows(codes=torch.zeros(3, dtype=torch.long), present=torch.ones(3, 2, dtype=torch.bool),
                modality=torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        ours = net.encode(tokens, (14, 14), rows)
        torch.testing.assert_close(ours, reference.visual(image), rtol=0, atol=1e-6)


@pytest.mark.parametrize("modalities,bands,codes", [
    (("hsi", "lidar"), (12, 1), [0, 1, 2, 0, 1, 2, 2]),
    (("hsi", "lidar", "sar"), (12, 1, 4), [0, 1, 2, 3, 4, 5, 6, 0]),
])
@pytest.mark.parametrize("sparse", [True, False])
def test_skip_missing_equals_compute_and_zero(modalities, bands, codes, sparse):
    net = model(modalities, bands, sparse_experts=sparse)
    data = batch(codes, modalities, bands)
    weight = torch.randn(len(codes), 5)
    net.skip_missing = True
    skip_logits, skip_grads = outputs_and_grads(net, data, lambda logits: (logits * weight).sum())
    net.skip_missing = False
    all_logits, all_grads = outputs_and_grads(net, data, lambda logits: (logits * weight).sum())
    torch.testing.assert_close(skip_logits, all_logits, rtol=1e-5, atol=1e-6)
    assert skip_grads.keys() == all_grads.keys()
    for name in skip_grads:
        torch.testing.assert_close(skip_grads[name], all_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_missing_modality_really_is_skipped_and_zeroed():
    net = model()
    data = batch([1, 1, 1])  # HSI missing everywhere: its tokenizer never runs
    net(data).sum().backward()
    assert net.tokenizers["hsi"].conv3.weight.grad is None
    assert net.tokenizers["lidar"].conv3.weight.grad is not None
    feats = net.features(data)
    assert feats.shape == (3, 2, 32) and feats[:, 0].abs().sum() == 0 and feats[:, 1].abs().sum() > 0
    changed = batch([1, 1, 1])
    changed["hsi"] = torch.randn_like(changed["hsi"]) * 100  # missing content must not matter
    torch.testing.assert_close(net(changed), net(data))


def test_sparse_and_dense_experts_agree_in_the_model():
    net = model()
    data = batch([0, 1, 2, 0])
    sparse = net(data)
    for m in net.modules():
        if isinstance(m, MaMOLAdapter):
            m.sparse = False
    torch.testing.assert_close(net(data), sparse, rtol=1e-5, atol=1e-6)


def test_only_the_mamol_parts_train_and_the_backbone_gets_no_gradient():
    net = model()
    net(batch([0, 1, 2, 0, 0])).sum().backward()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    for name in trainable:
        assert name.startswith(("tokenizers.", "method.patterns.image.", "head.")) or ".adapter." in name, name
    assert any(n.startswith("visual.transformer.resblocks.3.mlp.adapter.") for n in trainable)
    assert {"head.weight", "head.bias", "method.patterns.image.proj.weight", "tokenizers.hsi.conv3.weight",
            "tokenizers.lidar.conv1.weight"} <= trainable
    for name, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert "visual.class_embedding" in frozen and "visual.proj" in frozen and "visual.ln_post.weight" in frozen


def test_head_init_and_shapes():
    net = model()
    assert net.head.in_features == 2 * 32 and net.head.out_features == 5
    assert net.head.bias.abs().sum() == 0 and 0.01 < net.head.weight.std() < 0.03
    assert net(batch([0, 2])).shape == (2, 5)
    assert net.aux_loss() is None


def test_positional_table_is_interpolated_for_other_patch_sizes():
    net = model()
    assert net.positional_embedding((14, 14)) is net.visual.positional_embedding
    assert net.positional_embedding((7, 7)).shape == (50, 64)
    assert net(batch([0, 1, 2], patch=7)).shape == (3, 5)


def test_load_balance_aux_loss():
    net = model(load_balance_weight=0.1)
    net.train()
    net(batch([0, 1, 2]))
    aux = net.aux_loss()
    assert aux is not None and aux.ndim == 0 and aux.requires_grad


def test_bad_batches_and_configs_are_explained():
    net = model()
    wrong = batch([0, 1], bands=(3, 1))
    with pytest.raises(ValueError, match=r"batch\['hsi'\] has shape \(2, 3, 14, 14\); expected \(2, 12, P, P\)"):
        net(wrong)
    no_lidar = batch([0, 1])
    del no_lidar["lidar"]
    with pytest.raises(KeyError, match="lidar"):
        net(no_lidar)
    with pytest.raises(ConfigError, match=r"adapter_layers=\[6, 7\].*4-block"):
        model(adapter_layers=[6, 7])
    info = remote_info(("hsi", "sar"), (3, 1))
    info.bands.pop("sar")
    with pytest.raises(ValueError, match="no band count"):
        tiny_model(info)


def test_no_adapters_when_adapter_layers_is_empty():
    net = model(adapter_layers=[])
    assert not any(isinstance(m, MaMOLAdapter) for m in net.modules())
    assert net(batch([0, 1, 2])).shape == (3, 5)


def houston_parameter_count(d=768, r=8, n_dyn=2, p=8, bands=(144, 1), classes=15, hidden=256, layers=6):
    tokenizers = sum(c * hidden * 9 + hidden * d for c in bands)
    experts = (n_dyn + 1 + len(bands)) * 2 * d * r
    router = (d + p) * (d // 2) + d // 2 + (d // 2) * n_dyn + n_dyn
    out = d * d + d
    return tokenizers + layers * (experts + router + out) + (3 * p + p) + (len(bands) * 512 * classes + classes)


@pytest.mark.heavy
def test_houston_configuration_vit_b16():
    torch.manual_seed(0)
    net = tiny_model(remote_info(("hsi", "lidar"), (144, 1), classes=15), vit="ViT-B/16")
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == houston_parameter_count() == 6_449_723  # this implementation's count (docs/rivals.md)
    data = batch([0, 1, 2], bands=(144, 1))
    net.skip_missing = True
    skip = net(data)
    net.skip_missing = False
    torch.testing.assert_close(skip, net(data), rtol=1e-4, atol=1e-5)
