"""MaMOL's ablation keys: what each leaves out, a single always-on expert, a router blind to the pattern, and the
release's threshold gate on hand-set weights."""
import pytest
import torch
import torch.nn.functional as F

from mamol.errors import ConfigError
from mamol.methods.mamol import MaMOL
from mamol.models.adapter import AdapterContext, MaMOLAdapter
from mamol.models.method import Rows
from tests.helpers import remote_info, set_pattern_embedding, tiny_model

ROWS = Rows(codes=torch.tensor([0, 1, 2, 0]), present=torch.tensor([[1, 1], [0, 1], [1, 0], [1, 1]]).bool(),
            modality=torch.tensor([0, 1, 0, 1]))
OTHER = Rows(codes=torch.tensor([2, 2, 1, 1]), present=torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]]).bool(),
             modality=torch.tensor([0, 0, 1, 1]))


def model(**updates):
    torch.manual_seed(0)
    return tiny_model(remote_info(), **updates)


def encode(net, rows, seed=0):
    x = torch.randn(4, 20, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net.method.run_blocks("image", net.visual.transformer, x, rows)


def trained(net):
    return {n.split(".adapter.")[-1] for n, p in net.named_parameters() if p.requires_grad and ".adapter." in n}


def test_defaults_are_the_full_method():
    net = model()
    assert trained(net) == {"dyn_A", "dyn_B", "shared_A", "shared_B", "mod_A", "mod_B", "router_in.weight",
                            "router_in.bias", "router_out.weight", "router_out.bias", "out.weight", "out.bias"}
    assert net.method.adapters[0].router_in.in_features == 64 + 8 and set(net.method.patterns) == {"image"}
    assert net.method.adapters[0].shared_A.shape[0] == 1


def test_each_key_leaves_its_part_out():
    assert "dyn_A" not in trained(model(use_dynamic_experts=False))
    assert not any(n.startswith("router") for n in trained(model(use_dynamic_experts=False)))
    assert model(use_shared_experts=False).method.adapters[0].shared_A.shape[0] == 0
    assert "mod_A" not in trained(model(use_modality_experts=False))
    blind = model(router_uses_pattern=False)
    assert blind.method.adapters[0].router_in.in_features == 64 and not blind.method.patterns  # no unused embedding


def test_no_dynamic_no_modality_experts_is_one_always_on_expert():
    net = model(use_dynamic_experts=False, use_modality_experts=False)
    adapter: MaMOLAdapter = net.method.adapters[0]
    z = torch.randn(3, 7, 64)
    context = AdapterContext()
    with context.rows(torch.zeros(3, 0), torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])), torch.no_grad():
        out = adapter(z, context)
    a, b = adapter.shared_A[0], adapter.shared_B[0]
    torch.testing.assert_close(out, adapter.scale * adapter.out(F.gelu((z @ a) @ b)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encode(net, ROWS), encode(net, OTHER), rtol=0, atol=0)  # patterns change nothing


def test_router_without_pattern_reads_the_token_only():
    net = model(router_uses_pattern=False, use_modality_experts=False)
    torch.testing.assert_close(encode(net, ROWS), encode(net, OTHER), rtol=0, atol=0)
    with_pattern = model(use_modality_experts=False)
    assert (encode(with_pattern, ROWS) - encode(with_pattern, OTHER)).abs().max() > 1e-6


def test_threshold_gate_is_the_releases_formula_on_hand_set_weights():
    net = model(modality_gate="threshold")
    method: MaMOL = net.method
    embedding = set_pattern_embedding(method, {  # embedding coordinate: its weight for codes 0, 1, 2
        0: [0.9, 0.2, 0.6],  # e_0 (HSI expert): on for codes 0 and 2
        1: [0.7, 0.8, 0.5],  # e_1 (LiDAR expert): on for codes 0 and 1 only
    })
    e = embedding(ROWS.codes)
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # [e_m > 0.5], 0.5 itself is off
    torch.testing.assert_close(method.gates(e, ROWS, torch.float32), expected)
    # The whole encoder equals MaMOL run with those gates in place of presence.
    x = torch.randn(4, 20, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), method.contexts["image"].rows(e, expected):
        reference = net.visual.transformer(x)
    torch.testing.assert_close(encode(net, ROWS), reference, rtol=0, atol=0)
    # So far the two gates agree; where they do not, the outputs differ: with e_0 = 0.9 for code 1 (HSI missing)
    # the release switches the HSI expert on, presence keeps it off.
    with torch.no_grad():
        embedding.proj.weight[0, 1] = 0.9
    presence = model()
    presence.load_state_dict(net.state_dict())
    assert (encode(net, ROWS) - encode(presence, ROWS))[1].abs().max() > 1e-6


def test_threshold_needs_a_coordinate_per_modality():
    with pytest.raises(ConfigError, match="pattern_dim=2 must be >= 3 for 3 modalities"):
        tiny_model(remote_info(("hsi", "lidar", "sar"), (12, 1, 2)), modality_gate="threshold", pattern_dim=2)
    with pytest.raises(ConfigError, match="modality_gate"):
        model(modality_gate="learned")
