"""MoE-LoRA: the written-out top-k formula, sparse == dense, a soft mixture of identical experts == one expert,
shared experts, and a router that never sees the missing pattern."""
import pytest
import torch

from mamol.errors import ConfigError
from mamol.methods.moe_lora import MoELoRALayer
from mamol.models.method import Rows
from tests.helpers import remote_info, tiny_batch, tiny_model


def layer(router="topk", top_k=2, experts=4, shared=0, sparse=True, scale=0.5, dim=16, rank=3) -> MoELoRALayer:
    torch.manual_seed(0)
    out = MoELoRALayer(dim, rank, experts, top_k, shared, router, scale, sparse).double()
    with torch.no_grad():  # larger than the 0.02 init so that every term matters numerically
        for p in (out.A, out.B, out.shared_A, out.shared_B):
            p.normal_(std=0.5)
    return out


def tokens(n=3, length=5, dim=16):
    return torch.randn(n, length, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def written_out(m: MoELoRALayer, z):
    """The formula token by token: top-k (not renormalised) or soft gates, plus the shared experts."""
    out = torch.zeros_like(z)
    for n in range(z.shape[0]):
        for t in range(z.shape[1]):
            x = z[n, t]
            g = (m.router.weight @ x).softmax(-1)
            keep = g.topk(m.top_k).indices.tolist() if m.router_kind == "topk" else range(len(g))
            mix = sum(g[e] * (x @ m.A[e]) @ m.B[e] for e in keep)
            mix = mix + sum((x @ m.shared_A[s]) @ m.shared_B[s] for s in range(m.shared_A.shape[0]))
            out[n, t] = m.scale * mix
    return out


@pytest.mark.parametrize("router,top_k,shared,sparse", [("topk", 1, 0, True), ("topk", 2, 1, True),
                                                         ("topk", 2, 1, False), ("soft", 1, 2, True)])
def test_matches_the_written_out_formula(router, top_k, shared, sparse):
    m = layer(router, top_k, shared=shared, sparse=sparse)
    z = tokens()
    torch.testing.assert_close(m(z), written_out(m, z), rtol=1e-10, atol=1e-10)


def test_soft_mixture_of_identical_experts_is_one_expert():
    m = layer("soft", experts=4)
    with torch.no_grad():
        m.A.copy_(m.A[:1].expand_as(m.A))
        m.B.copy_(m.B[:1].expand_as(m.B))
        m.router.weight.normal_()  # any router: the gates sum to one
    z = tokens()
    torch.testing.assert_close(m(z), m.scale * (z @ m.A[0]) @ m.B[0], rtol=1e-10, atol=1e-10)


def test_sparse_equals_dense_with_gradients():
    z = tokens().requires_grad_(True)
    results = []
    for sparse in (True, False):
        m = layer("topk", top_k=2, shared=1, sparse=sparse)
        z.grad = None
        (m(z) * torch.arange(16, dtype=torch.float64)).sum().backward()
        results.append((m(z).detach(), z.grad.clone(), m.A.grad.clone(), m.router.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_router_sees_the_token_only_and_no_pattern_parts_exist():
    torch.manual_seed(0)
    net = tiny_model(remote_info(), method="moe_lora", num_shared_experts=1)
    names = [n for n, p in net.named_parameters() if p.requires_grad and n.startswith("visual.")]
    assert names and not any("pattern" in n or "mod_" in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"A", "B", "shared_A", "shared_B", "weight"}
    x = torch.randn(4, 197, 64)
    rows = [Rows(torch.tensor(codes), torch.tensor(present), torch.tensor([0, 1, 0, 1]))
            for codes, present in (([0, 0, 0, 0], [[1, 1]] * 4), ([1, 2, 2, 1], [[0, 1], [1, 0], [1, 0], [0, 1]]))]
    with torch.no_grad():
        a, b = (net.method.run_blocks("image", net.visual.transformer, x, r) for r in rows)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sizes_are_mamols_and_the_soft_router_refuses_a_balance_loss():
    net = tiny_model(remote_info(), method="moe_lora")
    moe = net.method.layers[0]
    assert moe.A.shape == (2, 64, 8) and moe.top_k == 1 and moe.shared_A.shape[0] == 0  # remote: 2 experts, r 8
    assert len(net.method.layers) == 2  # MaMOL's blocks: the last half of 4
    with pytest.raises(ConfigError, match="moe_router='soft'"):
        tiny_model(remote_info(), method="moe_lora", moe_router="soft", load_balance_weight=0.1)
    with pytest.raises(ConfigError, match="moe_router"):
        tiny_model(remote_info(), method="moe_lora", moe_router="dense")


@pytest.mark.parametrize("top_k", [1, 2])
def test_sparse_dispatch_equals_the_dense_masked_formula_in_the_model(top_k):
    """``moe_router="topk"`` with ``sparse_experts`` (each expert only on its routed tokens, on the CPU) against
    ``sparse_experts=False`` (every expert on every token, gates zero outside the top-k): the whole tiny model's
    logits and every trainable gradient, in 32-bit; with top-1, expert 3 is never picked."""
    results = []
    for sparse in (True, False):
        torch.manual_seed(0)
        net = tiny_model(remote_info(), method="moe_lora", num_dynamic_experts=4, top_k=top_k, num_shared_experts=1,
                         sparse_experts=sparse)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.requires_grad and name.endswith((".A", ".B")):
                    p.normal_(std=0.1)
            for layer in net.method.layers:  # expert 3's logit lies between experts 0's and 1's: never the top-1
                layer.router.weight[3] = (layer.router.weight[0] + layer.router.weight[1]) / 2
        out = net(tiny_batch("remote"))
        (out * torch.arange(out.shape[-1])).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    (sparse_out, sparse_grads), (dense_out, dense_grads) = results
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-6, atol=1e-6)
    assert sparse_grads.keys() == dense_grads.keys()
    for name, grad in sparse_grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    experts = [g for n, g in sparse_grads.items() if n.endswith((".A", ".B")) and "shared" not in n]
    assert len(experts) == 4 and all(g[:3].abs().max() > 0 for g in experts)
    if top_k == 1:
        assert all(g[3].abs().max() == 0 for g in experts)


def test_moe_router_sparse_dispatches_on_every_device_and_equals_the_dense_formula(monkeypatch):
    """``moe_router="sparse"``: token-choice top-k whose experts run only on their routed tokens on any device (here
    the CPU is taken off the sparse devices, as a GPU is), equal to the dense masked formula of the same router."""
    from mamol.models import adapter

    calls = []
    real = adapter.sparse_topk_lora
    monkeypatch.setattr(adapter, "SPARSE_DEVICES", frozenset())  # "topk" now takes the dense formula
    monkeypatch.setattr(adapter, "sparse_topk_lora", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    for router in ("sparse", "topk"):
        torch.manual_seed(0)
        net = tiny_model(remote_info(), method="moe_lora", moe_router=router, num_dynamic_experts=4, top_k=2)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.requires_grad and name.endswith((".A", ".B")):
                    p.normal_(std=0.1)
        before = len(calls)
        out = net(tiny_batch("remote"))
        (out * torch.arange(out.shape[-1])).sum().backward()
        results.append((len(calls) - before, out.detach(),
                        {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    (sparse_calls, sparse_out, sparse_grads), (dense_calls, dense_out, dense_grads) = results
    assert sparse_calls == len(net.method.layers) > 0 and dense_calls == 0  # one call per adapted block
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-6, atol=1e-6)
    for name, grad in sparse_grads.items():
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-5, atol=1e-6, msg=name)
