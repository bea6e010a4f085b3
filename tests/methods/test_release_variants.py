"""The release's exact variants as options, each against a hand-written formula: MaMOL's ``modality_gate="release"``
(``[e_{m+1} > 0.5]``), DCP's ``dcp_variant="release"`` (one dynamic attention for every modality, ``ln_post`` and
``proj`` trained) and ``dcp_init="identical"``, and LoRA's ``lora_dropout`` (input dropout, training only)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mamol.errors import ConfigError
from mamol.methods.mamol import MaMOL
from mamol.models.lora import LoRALinear, LowRank
from mamol.models.method import Rows
from mamol.runs import trainable_parameters
from tests.helpers import natural_info, remote_info, set_pattern_embedding, tiny_model

ROWS = Rows(codes=torch.tensor([0, 1, 2, 0]), present=torch.tensor([[1, 1], [0, 1], [1, 0], [1, 1]]).bool(),
            modality=torch.tensor([0, 1, 0, 1]))


def remote(**updates):
    torch.manual_seed(0)
    return tiny_model(remote_info(), **updates).double()


# ------------------------------------------------------------------------------------------- MaMOL's gate
def test_release_gate_reads_coordinate_m_plus_1_of_the_pattern_embedding():
    net = remote(modality_gate="release")
    method: MaMOL = net.method
    embedding = set_pattern_embedding(method, {  # embedding coordinate: its weight for codes 0, 1, 2
        0: [0.9, 0.9, 0.9],  # e_0: read by "threshold", never by "release"
        1: [0.6, 0.2, 0.7],  # e_1 -> HSI expert: on for codes 0 and 2
        2: [0.8, 0.9, 0.5],  # e_2 -> LiDAR expert: on for codes 0 and 1
    })
    e = embedding(ROWS.codes)
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(method.gates(e, ROWS, torch.float64), (e[:, 1:3] > 0.5).double())
    torch.testing.assert_close(method.gates(e, ROWS, torch.float64), expected)
    x = torch.randn(4, 20, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), method.contexts["image"].rows(e, expected):
        reference = net.visual.transformer(x)
    with torch.no_grad():
        out = method.run_blocks("image", net.visual.transformer, x, ROWS)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


def test_release_gate_needs_two_modalities_and_three_pattern_coordinates():
    with pytest.raises(ConfigError, match="modality_gate='release' is the release's gate for two modalities"):
        tiny_model(remote_info(("hsi", "lidar", "sar"), (12, 1, 2)), modality_gate="release")
    with pytest.raises(ConfigError, match="pattern_dim=2 must be >= 3"):
        tiny_model(remote_info(), modality_gate="release", pattern_dim=2)


# ------------------------------------------------------------------------------------------- DCP
def test_dcp_release_shares_one_dynamic_attention_and_trains_ln_post_and_proj():
    reference, release = remote(method="dcp"), remote(method="dcp", dcp_variant="release")
    assert all(not hasattr(s, "attention") for s in release.method.streams.values())
    attention = release.method.shared_attention
    per_stream = sum(p.numel() for p in attention.parameters())
    pooling = release.visual.ln_post.weight.numel() * 2 + release.visual.proj.numel()
    assert release.visual.proj.requires_grad and release.visual.ln_post.weight.requires_grad
    assert not reference.visual.proj.requires_grad and not reference.visual.ln_post.weight.requires_grad
    assert trainable_parameters(release) == trainable_parameters(reference) - per_stream + pooling  # 2 streams -> 1
    # Each row's dynamic prompts: softmax(Q W_q (x W_k)ᵀ / √D) x W_v W_o with its stream's queries Q^s(t).
    rows = Rows(torch.tensor([0, 0, 1, 2]), torch.tensor([[1, 1], [1, 1], [0, 1], [1, 0]]).bool(),
                torch.tensor([0, 1, 1, 0]))
    x = torch.randn(4, 20, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = release.method.dynamic_prompts((0, 1), rows.modality, x, rows)
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
        for n, (code, modality) in enumerate(zip(rows.codes.tolist(), rows.modality.tolist())):
            q = release.method.streams[("hsi", "lidar")[modality]].queries[code] @ w_q.T + b_q  # (n, D)
            k, v = x[n] @ w_k.T + b_k, x[n] @ w_v.T + b_v  # (L, D)
            expected = (q @ k.T / 64 ** 0.5).softmax(-1) @ v @ attention.out_proj.weight.T + attention.out_proj.bias
            torch.testing.assert_close(out[n], expected)


def test_dcp_release_is_refused_on_image_text_data():
    with pytest.raises(ConfigError, match="dcp_variant='release' is the DCP baseline of MaMOL's release"):
        tiny_model(natural_info(), method="dcp", dcp_variant="release")


def test_dcp_init_identical_copies_the_first_projection_into_every_block():
    for init, same in (("identical", True), ("independent", False)):
        net = remote(method="dcp", dcp_init=init)
        for stream in net.method.streams.values():
            first = stream.project[0].state_dict()
            for later in stream.project[1:]:
                equal = all(torch.equal(first[k], v) for k, v in later.state_dict().items())
                assert equal == same, init
                assert all(p.data_ptr() != q.data_ptr() for p, q in zip(stream.project[0].parameters(),
                                                                          later.parameters()))  # copies, not shared


# ------------------------------------------------------------------------------------------- LoRA's dropout
def updated(p: float) -> LowRank:
    torch.manual_seed(0)
    update = LowRank(16, 12, rank=4, alpha=8.0, dropout=p).double()
    with torch.no_grad():
        update.B.normal_()  # B = 0 at init would hide the update
    return update


def test_lora_dropout_zero_is_todays_update_in_both_modes():
    update, x = updated(0.0), torch.randn(3, 5, 16, dtype=torch.float64)
    formula = 2.0 * x @ update.A.T @ update.B.T  # (α / r) · B A x
    for mode in (True, False):
        update.train(mode)
        torch.testing.assert_close(update(x), formula, rtol=0, atol=0)


def test_lora_dropout_acts_on_the_updates_input_in_training_only():
    update, x = updated(0.5), torch.randn(3, 5, 16, dtype=torch.float64)
    formula = 2.0 * x @ update.A.T @ update.B.T
    update.eval()
    torch.testing.assert_close(update(x), formula, rtol=0, atol=0)
    update.train()
    torch.manual_seed(7)
    dropped = F.dropout(x, 0.5, training=True)  # zeros, survivors × 1 / (1 − p)
    torch.manual_seed(7)
    torch.testing.assert_close(update(x), 2.0 * dropped @ update.A.T @ update.B.T)
    assert (update(x) - formula).abs().max() > 1e-6
    linear = torch.nn.Linear(16, 12).double()
    layer = LoRALinear(linear, LowRank(16, 12, 4, 8.0, 0.5)).double().train()
    layer.lora.load_state_dict(update.state_dict())
    torch.manual_seed(7)  # the frozen path sees the token unchanged
    torch.testing.assert_close(layer(x), linear(x) + 2.0 * dropped @ update.A.T @ update.B.T)


def test_lora_dropout_reaches_every_update_and_is_checked():
    net = tiny_model(remote_info(), method="lora", lora_dropout=0.1, lora_targets=["q", "v", "o", "mlp"])
    updates = [m for m in net.modules() if isinstance(m, LowRank)]
    assert updates and all(m.dropout == 0.1 for m in updates)
    with pytest.raises(ConfigError, match="lora_dropout must be in"):
        tiny_model(remote_info(), method="lora", lora_dropout=1.0)
