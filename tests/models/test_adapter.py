"""MaMOL adapter: formula, sparse == dense, presence gating, injection beside a frozen open_clip MLP."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mamol.models.adapter import (
    AdapterContext,
    MaMOLAdapter,
    MLPWithAdapter,
    PatternEmbedding,
    inject_adapters,
    resolve_layers,
)
from mamol.models.backbone import build_clip


def lora(z, a, b):
    return (z @ a) @ b


def reference_delta(adapter: MaMOLAdapter, z, pattern, presence):
    """SPEC §5.3 written out token by token with Python loops (the slow, obvious formula)."""
    d = adapter.dim
    out = torch.zeros_like(z)
    for n in range(z.shape[0]):
        e = pattern[n]
        for t in range(z.shape[1]):
            x = z[n, t]
            logits = adapter.router_out(F.gelu(adapter.router_in(torch.cat([x, e]))))
            g = logits.softmax(-1)
            top = g.topk(adapter.top_k).indices
            mix = sum(g[i] * lora(x, adapter.dyn_A[i], adapter.dyn_B[i]) for i in top.tolist())
            mix = mix + sum(lora(x, adapter.shared_A[s], adapter.shared_B[s]) for s in range(adapter.num_shared))
            mix = mix + sum(presence[n, m] * lora(x, adapter.mod_A[m], adapter.mod_B[m])
                            for m in range(adapter.n_modalities))
            out[n, t] = adapter.scale * (adapter.out(F.gelu(mix)))
    assert out.shape[-1] == d
    return out


def make(sparse=True, top_k=2, num_dynamic=4, n_modalities=2, num_shared=1, scale=0.7, dim=16):
    torch.manual_seed(0)
    adapter = MaMOLAdapter(dim, n_modalities, rank=3, num_dynamic=num_dynamic, top_k=top_k,
                           num_shared=num_shared, pattern_dim=5, scale=scale, sparse=sparse).double()
    # Larger LoRA weights than the 0.02 init so every term matters numerically.
    with torch.no_grad():
        for p in (adapter.dyn_A, adapter.dyn_B, adapter.shared_A, adapter.shared_B, adapter.mod_A, adapter.mod_B):
            p.normal_(std=0.5)
    return adapter


def inputs(n=4, length=6, dim=16, n_modalities=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, length, dim, generator=g, dtype=torch.float64)
    pattern = torch.randn(n, 5, generator=g, dtype=torch.float64)
    presence = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.float64)[:n]
    if n_modalities == 3:
        presence = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)[:n]
    return z, pattern, presence


def run(adapter, z, pattern, presence):
    ctx = AdapterContext()
    with ctx.rows(pattern, presence):
        return adapter(z, ctx)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("top_k,num_dynamic,n_modalities,num_shared", [(1, 2, 2, 1), (2, 4, 2, 1), (3, 3, 3, 2)])
def test_matches_written_out_formula(sparse, top_k, num_dynamic, n_modalities, num_shared):
    adapter = make(sparse, top_k, num_dynamic, n_modalities, num_shared)
    z, pattern, presence = inputs(n_modalities=n_modalities)
    expected = reference_delta(adapter, z, pattern, presence)
    torch.testing.assert_close(run(adapter, z, pattern, presence), expected, rtol=1e-10, atol=1e-10)


def grads(adapter, z, pattern, presence, weight):
    adapter.zero_grad()
    z = z.clone().requires_grad_(True)
    (run(adapter, z, pattern, presence) * weight).sum().backward()
    return {n: p.grad.clone() for n, p in adapter.named_parameters()}, z.grad


@pytest.mark.parametrize("top_k,num_dynamic", [(1, 2), (2, 4), (1, 5)])
def test_sparse_equals_dense_outputs_and_grads(top_k, num_dynamic):
    adapter = make(True, top_k, num_dynamic)
    z, pattern, presence = inputs(n=4, length=9)
    weight = torch.randn(4, 9, 16, dtype=torch.float64)
    sparse_out = run(adapter, z, pattern, presence)
    sparse_grads, sparse_zgrad = grads(adapter, z, pattern, presence, weight)
    adapter.sparse = False
    dense_out = run(adapter, z, pattern, presence)
    dense_grads, dense_zgrad = grads(adapter, z, pattern, presence, weight)
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse_zgrad, dense_zgrad, rtol=1e-12, atol=1e-12)
    assert sparse_grads.keys() == dense_grads.keys()
    for name in sparse_grads:
        torch.testing.assert_close(sparse_grads[name], dense_grads[name], rtol=1e-12, atol=1e-12, msg=name)


def test_sparse_handles_an_expert_nobody_picks():
    adapter = make(True, top_k=1, num_dynamic=3)
    with torch.no_grad():  # router prefers expert 0 for every token
        adapter.router_out.bias.copy_(torch.tensor([100.0, 0.0, 0.0]))
    z, pattern, presence = inputs()
    out = run(adapter, z, pattern, presence)
    adapter.sparse = False
    torch.testing.assert_close(out, run(adapter, z, pattern, presence))


def test_presence_switches_exactly_the_present_modality_experts():
    adapter = make(True, top_k=1, num_dynamic=2, n_modalities=3)
    z, pattern, presence = inputs(n_modalities=3)  # rows: {0,1,2}, {1,2}, {0}, {1}
    base = run(adapter, z, pattern, presence)
    for m in range(3):
        bumped = copy.deepcopy(adapter)
        with torch.no_grad():
            bumped.mod_B[m].add_(1.0)
        changed = (run(bumped, z, pattern, presence) - base).abs().amax(dim=(1, 2)) > 1e-9  # (N,)
        assert changed.tolist() == presence[:, m].bool().tolist(), m
    # Gradients reach a modality expert only from rows where that modality is present.
    only_first = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float64)
    g, _ = grads(adapter, z, pattern, only_first, torch.ones_like(z))
    assert g["mod_A"][0].abs().sum() > 0 and g["mod_B"][0].abs().sum() > 0
    assert g["mod_A"][1:].abs().sum() == 0 and g["mod_B"][1:].abs().sum() == 0


def test_top_k_gates_are_not_renormalised():
    adapter = make(False, top_k=1, num_dynamic=2, scale=1.0)
    with torch.no_grad():  # isolate the dynamic experts, make the router uniform, W_o = identity
        for p in (adapter.shared_B, adapter.mod_B, adapter.router_in.weight, adapter.router_out.weight,
                  adapter.router_out.bias, adapter.out.bias):
            p.zero_()
        adapter.out.weight.copy_(torch.eye(16, dtype=torch.float64))
        adapter.dyn_B[1].copy_(adapter.dyn_B[0])
        adapter.dyn_A[1].copy_(adapter.dyn_A[0])
    z, pattern, presence = inputs()
    out = run(adapter, z, pattern, presence)
    expected = F.gelu(0.5 * lora(z, adapter.dyn_A[0], adapter.dyn_B[0]))  # gate 0.5, not renormalised to 1
    torch.testing.assert_close(out, expected)


def test_pattern_embedding_features():
    two = PatternEmbedding(2, 8)
    assert two.features(torch.tensor([0, 1, 2])).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    three = PatternEmbedding(3, 8)
    assert three.features(torch.tensor([0, 1, 6, 5])).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert three(torch.tensor([3, 4])).shape == (2, 8)
    with pytest.raises(ValueError, match="at least 2 modalities"):
        PatternEmbedding(1, 8)


def test_adapter_needs_its_context_and_valid_sizes():
    adapter = make()
    with pytest.raises(RuntimeError, match="AdapterContext"):
        adapter(torch.zeros(1, 2, 16, dtype=torch.float64), AdapterContext())
    with pytest.raises(ValueError, match="top_k"):
        MaMOLAdapter(16, 2, num_dynamic=2, top_k=3)


def test_load_balance_term():
    adapter = make(top_k=1, num_dynamic=2)
    adapter.balance = True
    z, pattern, presence = inputs()
    run(adapter, z, pattern, presence)
    assert adapter.aux_loss is not None and adapter.aux_loss.ndim == 0 and adapter.aux_loss >= 0
    adapter.eval()
    run(adapter, z, pattern, presence)
    assert adapter.aux_loss is None


def test_resolve_layers():
    assert resolve_layers(None, 12, "adapter_layers", range(6, 12)) == [6, 7, 8, 9, 10, 11]
    assert resolve_layers([-1, -2], 4, "adapter_layers", []) == [2, 3]
    assert resolve_layers([], 4, "adapter_layers", [3]) == []
    with pytest.raises(ValueError, match=r"adapter_layers_text=\[10, 11\].*4-block"):
        resolve_layers([10, 11], 4, "adapter_layers_text", [])
    with pytest.raises(ValueError, match="twice"):
        resolve_layers([1, -3], 4, "adapter_layers", [])


def test_injection_keeps_backbone_keys_and_zero_output_projection_is_identity():
    torch.manual_seed(0)
    clip = build_clip("tiny", None, True)
    blocks = clip.visual.transformer
    reference = copy.deepcopy(blocks)
    keys_before = set(blocks.state_dict())
    ctx = AdapterContext()
    adapters = inject_adapters(blocks, [1, 3], lambda: MaMOLAdapter(64, 2, pattern_dim=8), ctx)
    assert isinstance(blocks.resblocks[1].mlp, MLPWithAdapter) and not isinstance(blocks.resblocks[0].mlp,
                                                                                   MLPWithAdapter)
    keys_after = set(blocks.state_dict())
    assert {k for k in keys_after if ".adapter." not in k} == keys_before
    assert {k.split(".")[1] for k in keys_after if ".adapter." in k} == {"1", "3"}
    x = torch.randn(3, 197, 64)
    pattern, presence = torch.randn(3, 8), torch.ones(3, 2)
    with ctx.rows(pattern, presence):
        adapted = blocks(x)
    assert (adapted - reference(x)).abs().max() > 1e-6  # the adapters do something
    for adapter in adapters:
        with torch.no_grad():
            adapter.out.weight.zero_()
            adapter.out.bias.zero_()
    # no_grad: both then take the same attention kernel (with grad enabled, the adapters' trainable weights
    # make later blocks' inputs require grad, which selects a different but equivalent MHA path).
    with ctx.rows(pattern, presence), torch.no_grad():
        torch.testing.assert_close(blocks(x), reference(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has an adapter"):
        inject_adapters(blocks, [1], lambda: MaMOLAdapter(64, 2), ctx)
