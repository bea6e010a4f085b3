"""Flex-MoE: the source's combination index, the missing-modality bank (fills exactly the missing modality, and
its feature reaches the head), the noisy top-k router written out, sparse == dense, the S-Router's and
G-Router's losses by hand, the S-Router assigning expert c to combination c, zero experts = the frozen blocks,
the parameter count, and short runs on a scene and an image-text task."""
from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import torch

from mamol.errors import ConfigError
from mamol.methods.flex_moe import (
    FlexContext,
    FlexMoELayer,
    FlexMoEOptions,
    combination_table,
    cv_squared,
    prob_in_top_k,
    router_loss,
)
from mamol.missing import COMPLETE, IMAGE_MISSING, TEXT_MISSING
from mamol.models.method import Rows
from tests.helpers import natural_info, remote_info, run_experiment, tiny_batch, tiny_model

THREE = remote_info(("hsi", "lidar", "sar"), (12, 1, 2))


def layer(top_k=2, experts=4, sparse=True, dim=16, rank=3, modalities=2) -> FlexMoELayer:
    torch.manual_seed(0)
    out = FlexMoELayer(dim, rank, experts, top_k, 0.5, modalities, sparse).double()
    with torch.no_grad():  # larger than the init so that every term matters numerically
        for p in (out.A, out.B, out.w_gate, out.w_noise):
            p.normal_(std=0.5)
    return out


def tokens(n=3, length=5, dim=16):
    return torch.randn(n, length, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def context(combination, modality) -> FlexContext:
    ctx = FlexContext()
    ctx.combination, ctx.modality = torch.tensor(combination), torch.tensor(modality)
    return ctx


# ------------------------------------------------------------------------------------------- combinations, bank
def test_combinations_are_indexed_as_in_the_source():
    """Largest first, itertools order: 2 modalities (a, b) -> ab 0, a 1, b 2; code 1 (a missing) observes b."""
    assert combination_table(2).tolist() == [0, 2, 1, -1]
    # 3 modalities: abc 0, ab 1, ac 2, bc 3, a 4, b 5, c 6; codes are missing bitmasks (1 a, 2 b, 4 c).
    assert combination_table(3).tolist() == [0, 3, 2, 6, 1, 5, 4, -1]


@pytest.mark.parametrize("info", [remote_info(), THREE], ids=["two", "three"])
def test_the_bank_fills_exactly_the_missing_modality_of_each_pattern(info):
    torch.manual_seed(0)
    method = tiny_model(info, method="flex_moe").method
    n = len(info.modalities)
    codes = torch.arange(2 ** n - 1).repeat_interleave(n)  # every pattern x every modality
    modality = torch.arange(n).repeat(2 ** n - 1)
    missing = (codes >> modality) & 1 == 1
    x = torch.randn(len(codes), 7, 64)
    out = method.fill_tokens("image", x, Rows(codes, torch.zeros(len(codes), n, dtype=torch.bool), modality))
    torch.testing.assert_close(out[~missing], x[~missing], rtol=0, atol=0)  # present rows untouched
    filled = out[missing]  # (K, 7, D): one entry per (pattern, missing modality), the same at every position
    assert torch.equal(filled, filled[:, :1].expand_as(filled))
    assert len({tuple(row.tolist()) for row in filled[:, 0]}) == int(missing.sum()) == method.bank["image"].shape[0]
    assert int(missing.sum()) == {2: 2, 3: 9}[n]  # Σ over incomplete patterns of their missing modalities


def test_image_text_banks_fill_their_own_tower_only():
    torch.manual_seed(0)
    method = tiny_model(natural_info(), method="flex_moe").method
    codes = torch.tensor([COMPLETE, TEXT_MISSING, IMAGE_MISSING])
    x = torch.randn(3, 5, 64)
    for tower, column, row in (("text", 0, 1), ("image", 1, 2)):
        out = method.fill_tokens(tower, x, Rows(codes, torch.ones(3, 2, dtype=torch.bool), torch.full((3,), column)))
        assert method.bank[tower].shape == (1, 64)
        changed = [i for i in range(3) if not torch.equal(out[i], x[i])]
        assert changed == [row] and torch.equal(out[row], method.bank[tower][0].expand(5, -1))


@pytest.mark.parametrize("kind", ["remote", "natural"])
def test_a_missing_modality_is_encoded_from_the_bank_and_its_feature_kept(kind):
    """The missing modality's input does not matter, its feature is not zero, and it depends on the bank."""
    torch.manual_seed(0)
    net = tiny_model(remote_info() if kind == "remote" else natural_info(), method="flex_moe").eval()
    batch = tiny_batch(kind)
    features = net.features(batch).flatten(1)  # (B, M*E): per modality in code order (remote), image then text
    half = features.shape[1] // 2
    other = dict(batch)
    if kind == "remote":  # row 1 misses HSI, row 2 LiDAR
        other["hsi"], other["lidar"] = batch["hsi"].clone(), batch["lidar"].clone()
        other["hsi"][1], other["lidar"][2] = 5.0, -3.0
        missing_slices = [(1, slice(0, half)), (2, slice(half, None))]
    else:  # row 1 misses text, row 2 the image; features are image then text
        other["image"], other["text_ids"] = batch["image"].clone(), batch["text_ids"].clone()
        other["image"][2], other["text_ids"][1, 1:4] = 7.0, 1234
        missing_slices = [(1, slice(half, None)), (2, slice(0, half))]
    torch.testing.assert_close(net.features(other).flatten(1), features, rtol=0, atol=0)
    with torch.no_grad():
        for bank in net.method.bank.values():
            bank.add_(torch.randn_like(bank))  # not a constant: ln_pre would remove it
    moved = net.features(batch).flatten(1)
    for row, part in missing_slices:
        assert features[row, part].abs().sum() > 0
        assert not torch.allclose(moved[row, part], features[row, part])
    torch.testing.assert_close(moved[[0, 3]], features[[0, 3]], rtol=0, atol=0)  # complete rows: no bank


def test_skip_missing_does_not_apply():
    torch.manual_seed(0)
    net = tiny_model(remote_info(), method="flex_moe", skip_missing=True).eval()
    batch = tiny_batch("remote")
    skipping = net(batch)
    net.skip_missing = False
    torch.testing.assert_close(net(batch), skipping, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- the layer
def written_out(m: FlexMoELayer, z):
    """Eval (no noise), token by token: softmax over the top-k logits z W_g, Σ gate · (z A_e) B_e, times scale."""
    out = torch.zeros_like(z)
    for n in range(z.shape[0]):
        for t in range(z.shape[1]):
            logits = z[n, t] @ m.w_gate
            top = logits.topk(m.top_k)
            gates = top.values.softmax(-1)
            out[n, t] = m.scale * sum(g * (z[n, t] @ m.A[e]) @ m.B[e] for g, e in zip(gates, top.indices.tolist()))
    return out


@pytest.mark.parametrize("top_k,sparse", [(1, True), (2, True), (2, False), (4, True)])
def test_matches_the_written_out_formula(top_k, sparse):
    m = layer(top_k, sparse=sparse).eval()
    z = tokens()
    torch.testing.assert_close(m(z, context([0, 1, 2], [0, 0, 1])), written_out(m, z), rtol=1e-10, atol=1e-10)


def test_sparse_equals_the_dense_masked_formula_with_gradients():
    """Training mode (noisy router, same noise from the same seed): sparse top-k == dense masked sum."""
    z = tokens().requires_grad_(True)
    weight = torch.arange(16, dtype=torch.float64)
    m = layer(top_k=2).train()
    ctx = context([0, 1, 2], [0, 1, 0])
    results = []
    for run in ("sparse", "dense"):
        m.zero_grad()
        z.grad = None
        torch.manual_seed(3)
        if run == "sparse":
            out = m(z, ctx)
        else:
            _, _, _, top_values, top_idx = m.route(z)
            out = m.dense(z, top_values[..., :2].softmax(-1), top_idx[..., :2])
        (out * weight).sum().backward()
        results.append((out.detach(), z.grad.clone(), m.A.grad.clone(), m.w_gate.grad.clone(), m.w_noise.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_the_router_adds_noise_in_training_only():
    m = layer(top_k=1)
    z = tokens()
    ctx = context([0, 0, 0], [0, 0, 0])
    m.eval()
    assert torch.equal(m(z, ctx), m(z, ctx))
    m.train()
    torch.manual_seed(0)
    first = m(z, ctx)
    assert not torch.equal(first, m(z, ctx))  # another draw of the noise routes some token elsewhere


# ------------------------------------------------------------------------------------------- router losses by hand
def test_cv_squared_and_prob_in_top_k_by_hand():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert cv_squared(x).item() == pytest.approx(statistics.variance([1, 2, 6]) / (3.0 ** 2 + 1e-10))
    assert cv_squared(torch.tensor([4.0])).item() == 0.0
    # One token, 3 experts, top-1: noisy logits (2.0, 0.5, 1.0) -> expert 0 in; thresholds: in 1.0, out 2.0.
    clean, noisy = torch.tensor([[1.5, 0.2, 1.1]]), torch.tensor([[2.0, 0.5, 1.0]])
    std = torch.tensor([[0.5, 1.0, 2.0]])
    top = noisy.topk(2, dim=-1).values
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    expected = [phi((1.5 - 1.0) / 0.5), phi((0.2 - 2.0) / 1.0), phi((1.1 - 2.0) / 2.0)]
    assert prob_in_top_k(clean, noisy, std, top, 1)[0].tolist() == pytest.approx(expected)


def test_router_loss_by_hand():
    """Tokens 0, 1 complete (combination 0), token 2 of combination 1, token 3 of combination 2; 3 experts."""
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 0.0, 3.0]])
    gates = torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.4, 0.0, 0.6], [0.0, 0.2, 0.8]])
    load = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.6, 0.1, 0.7], [0.1, 0.4, 0.9]])
    combination = torch.tensor([0, 0, 1, 2])

    def ce(row, target):
        return -math.log(math.exp(logits[row, target]) / sum(math.exp(v) for v in logits[row].tolist()))

    def cv2(values):
        return statistics.variance(values) / (statistics.mean(values) ** 2 + 1e-10)

    s_router = (ce(2, 1) + ce(3, 2)) / 2  # incomplete tokens toward their combination's expert
    g_router = cv2([0.7, 1.3, 0.0]) + cv2([1.1, 1.3, 0.4])  # complete tokens, all experts
    s_balance = cv2([0.2, 1.4]) + cv2([0.5, 1.6])  # incomplete tokens, experts 1 and 2 only
    got = router_loss(logits, gates, load, combination, torch.ones(4)).item()
    assert got == pytest.approx(s_router + g_router + s_balance, rel=1e-5)
    # A pass of complete tokens only: the G-Router terms alone (the source's "all full" branch).
    only_full = router_loss(logits, gates, load, combination, torch.tensor([1.0, 1.0, 0.0, 0.0])).item()
    assert only_full == pytest.approx(g_router, rel=1e-5)


def test_the_layer_sums_the_loss_of_each_modality_pass():
    """The source runs its MoE once per modality chunk and adds the losses; rows of one call are split the same."""
    m = layer(top_k=2, experts=3).train()
    z = tokens(n=4)
    torch.manual_seed(0)
    m.losses = True
    m(z, context([0, 2, 0, 1], [0, 0, 1, 1]))
    both = m.aux_loss
    parts = []
    for rows in ([0, 1], [2, 3]):
        torch.manual_seed(0)
        noise = torch.randn(4, 5, 3, dtype=torch.float64)[rows]  # the same draws for those rows
        clean = z[rows] @ m.w_gate
        std = torch.nn.functional.softplus(z[rows] @ m.w_noise) + 1e-2
        noisy = clean + noise * std
        top_values, top_idx = noisy.topk(3, dim=-1)
        gates = torch.zeros_like(noisy).scatter(-1, top_idx[..., :2], top_values[..., :2].softmax(-1))
        load = prob_in_top_k(clean.reshape(10, 3), noisy.reshape(10, 3), std.reshape(10, 3),
                             top_values.reshape(10, 3), 2)
        comb = torch.tensor([0, 2, 0, 1])[rows].repeat_interleave(5)
        parts.append(router_loss(noisy.reshape(10, 3), gates.reshape(10, 3), load, comb, torch.ones(10)))
    torch.testing.assert_close(both, parts[0] + parts[1], rtol=1e-6, atol=1e-8)


def test_the_s_router_learns_to_send_each_combination_to_its_expert():
    """Trained on its losses alone, the router sends the tokens of an incomplete combination c to expert c (top-1);
    two modalities: each modality pass holds a complete sample, one of combination 1 (a only) and one of 2 (b only),
    3 experts. (As many tokens of each combination per pass: the S-Router's balance then agrees with its
    cross-entropy.)"""
    m = FlexMoELayer(16, 2, 3, 1, 1.0, 2, sparse=False)
    m.losses = True
    z = torch.randn(6, 6, 16, generator=torch.Generator().manual_seed(0))
    ctx = context([0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1])
    optimiser = torch.optim.Adam([m.w_gate, m.w_noise], lr=0.05)
    torch.manual_seed(0)
    m.train()
    for _ in range(100):
        optimiser.zero_grad()
        m(z, ctx)
        m.aux_loss.backward()
        optimiser.step()
    chosen = (z[[1, 2, 4, 5]] @ m.w_gate).argmax(-1)  # eval routing of the incomplete rows, (4, 6)
    assert chosen.tolist() == [[1] * 6, [2] * 6, [1] * 6, [2] * 6]


# ------------------------------------------------------------------------------------------- in the model
def test_zero_experts_are_the_frozen_blocks():
    torch.manual_seed(0)
    probe = tiny_model(remote_info(), method="linear_probe")
    torch.manual_seed(0)
    net = tiny_model(remote_info(), method="flex_moe").eval()
    for moe in net.method.layers:
        with torch.no_grad():
            moe.B.zero_()
    x = torch.randn(4, 197, 64)
    rows = Rows(torch.tensor([0, 1, 2, 0]), torch.tensor([[1, 1], [0, 1], [1, 0], [1, 1]]).bool(),
                torch.tensor([0, 1, 0, 1]))
    with torch.no_grad():
        torch.testing.assert_close(net.method.run_blocks("image", net.visual.transformer, x, rows),
                                   probe.visual.transformer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["remote", "natural"])
def test_trainable_parameters_are_experts_routers_and_bank(kind):
    """Per adapted block: E experts of 2·D·r plus W_g, W_n (D, E); per tower the bank's (pattern, modality) rows."""
    torch.manual_seed(0)
    net = tiny_model(remote_info() if kind == "remote" else natural_info(), method="flex_moe")
    own = sum(p.numel() for n, p in net.named_parameters()
              if p.requires_grad and (".adapter." in n or n.startswith("method.")))
    d, r, e = 64, (8 if kind == "remote" else 16), 16  # tiny width; MaMOL's rank; Flex-MoE's 16 experts
    blocks = 2 if kind == "remote" else 4  # remote: last half of 4 blocks; image-text: last two of each tower
    assert own == blocks * (e * 2 * d * r + 2 * d * e) + 2 * d
    assert {k: tuple(v.shape) for k, v in net.method.bank.items()} == (
        {"image": (2, d)} if kind == "remote" else {"image": (1, d), "text": (1, d)})


def test_options_capacity_defaults_and_errors():
    assert FlexMoEOptions.CAPACITY == "adapter_rank" in {f.name for f in dataclasses.fields(FlexMoEOptions)}
    assert "CAPACITY" not in {f.name for f in dataclasses.fields(FlexMoEOptions)}  # a class constant, not a key
    net = tiny_model(THREE, method="flex_moe")
    moe = net.method.layers[0]
    assert moe.A.shape == (16, 64, 8) and moe.top_k == 4 and net.method.options.gate_loss_weight == 1e-2
    with pytest.raises(ConfigError, match="num_dynamic_experts=6 must be >= the 7 combinations"):
        tiny_model(THREE, method="flex_moe", num_dynamic_experts=6, top_k=2)
    with pytest.raises(ConfigError, match="load_balance_weight"):
        tiny_model(remote_info(), method="flex_moe", load_balance_weight=0.1)
    with pytest.raises(ConfigError, match="top_k"):
        tiny_model(remote_info(), method="flex_moe", top_k=17)


def test_the_aux_loss_is_the_weighted_sum_over_layers_and_only_in_training():
    torch.manual_seed(0)
    net = tiny_model(remote_info(), method="flex_moe", gate_loss_weight=0.5).train()
    net(tiny_batch("remote"))
    terms = [moe.aux_loss for moe in net.method.layers]
    assert all(t is not None and t > 0 for t in terms)
    torch.testing.assert_close(net.aux_loss(), 0.5 * sum(terms))
    net.eval()
    net(tiny_batch("remote"))
    assert net.aux_loss() is None
    off = tiny_model(remote_info(), method="flex_moe", gate_loss_weight=0.0).train()
    off(tiny_batch("remote"))
    assert off.aux_loss() is None


# ------------------------------------------------------------------------------------------- runs
def test_short_run_on_a_scene(remote_root, tmp_path):
    report = run_experiment("remote", data_root=str(remote_root), datasets=["synthetic"], method="flex_moe",
                            batch_size=8, per_gpu_batchsize=8, max_epoch=1, max_steps=6, learning_rate=1e-3,
                            log_dir=str(tmp_path / "runs"), missing_table_root=str(tmp_path / "tables"),
                            exp_name="flex")
    assert report["method"] == "flex_moe" and 0.0 <= report["metrics"]["OA"] <= 100.0


def test_short_run_on_an_image_text_task(natural_root, tmp_path):
    report = run_experiment("task_finetune_food101", data_root=str(natural_root), method="flex_moe", batch_size=4,
                            per_gpu_batchsize=4, max_epoch=1, val_check_interval=1.0,
                            log_dir=str(tmp_path / "runs"), missing_table_root=str(tmp_path / "tables"),
                            exp_name="flex")
    assert report["method"] == "flex_moe" and "accuracy" in report["metrics"]
