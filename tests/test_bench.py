"""The benchmark CLI runs end to end on the tiny backbone and prints its figures; the layouts its speed levers
time compute what the library computes."""
import copy

import pytest
import torch

from mamol.bench import (
    adapter_forward,
    compiled_blocks,
    fused_adapter_forward,
    main,
    make_batch,
    open_clip_attention,
    release_adapter_forward,
    release_layout,
    remote_model,
)
from mamol.models.lora import OpenAttention
from tests.helpers import outputs_and_grads


def test_bench_tiny_prints_the_figures_and_the_goals(capsys):
    assert main(["--vit", "tiny", "--steps", "1", "--batch", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for label in ("(a) MaMOL / adapters removed", "(b) encode-all-and-zero / skip-missing",
                  "(c) step with sparse / dense experts", "(d) trainable parameters", "peak memory",
                  "(e) speed levers", "fused adapter", "batch-first attention", "today's step / our step",
                  "bf16 autocast (REDUCED PRECISION", "torch.compile", "(f) release layout",
                  "goal MaMOL step / adapter-free step <= 1.08x:", "goal release layout / our step >= 2x:",
                  "one block alone, fwd+bwd", "arithmetic floor of (a)"):
        assert label in out, label
    assert "2 complete, 1 HSI-missing, 1 LiDAR-missing -> 6 of 8" in out


def test_adapter_floor_counts_the_paper_adapter():
    from mamol.bench import adapter_floor
    adapter = remote_model("ViT-B/16").method.adapters[0]
    adapter_macs, block_macs = adapter_floor(adapter, 197)
    # router 768x384 + 384x2, W_o 768x768, top-1 + shared + 2 modality experts of rank 8 (768->8->768), x3
    assert adapter_macs == 3 * (768 * 384 + 384 * 2 + 768 * 768 + 4 * 2 * 768 * 8)
    assert block_macs == 2 * (12 * 768 * 768 + 2 * 197 * 768)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = remote_model("tiny").double()
    for adapter in model.method.adapters:  # larger LoRA weights than the 0.02 init, so every expert matters
        with torch.no_grad():
            for p in (adapter.dyn_A, adapter.dyn_B, adapter.shared_A, adapter.shared_B, adapter.mod_A, adapter.mod_B):
                p.normal_(std=0.5)
    batch = make_batch(4, torch.device("cpu"))
    batch.update({m: batch[m].double() for m in ("hsi", "lidar")})
    return model, batch


@pytest.mark.parametrize("layout", ["release", "fused", "open_clip attention"])
def test_the_benchmarked_layouts_compute_the_same_step(tiny, layout):
    """The library's step (sparse experts, OpenAttention) equals each layout the bench times against it."""
    model, batch = tiny
    assert all(isinstance(b.attn, OpenAttention) for b in model.visual.transformer.resblocks)
    ref_out, ref_grads = outputs_and_grads(model, batch, lambda logits: logits.square().sum())
    around = {"release": release_layout(model),
              "fused": lambda: adapter_forward(model, fused_adapter_forward),
              "open_clip attention": open_clip_attention(model)}[layout]
    with around():
        if layout != "fused":
            assert all(isinstance(b.attn, torch.nn.MultiheadAttention) for b in model.visual.transformer.resblocks)
        out, grads = outputs_and_grads(model, batch, lambda logits: logits.square().sum())
    assert all(isinstance(b.attn, OpenAttention) for b in model.visual.transformer.resblocks)  # restored
    assert "forward" not in vars(model.method.adapters[0]) and model.skip_missing
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-11, msg=name)


def test_release_forward_is_the_adapter_formula(tiny):
    model, _ = tiny
    adapter = model.method.adapters[0]
    context = copy.copy(model.method.contexts["image"])
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 5, adapter.dim, generator=g, dtype=torch.float64)
    pattern = torch.randn(3, 8, generator=g, dtype=torch.float64)
    presence = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    with context.rows(pattern, presence):
        expected = adapter(z, context)
        for forward in (release_adapter_forward, fused_adapter_forward):
            torch.testing.assert_close(forward(adapter, z, context), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.heavy
def test_compiled_blocks_match_eager_in_fp32():
    torch.manual_seed(0)
    model = remote_model("tiny")
    batch = make_batch(4, torch.device("cpu"))
    with torch.no_grad():
        eager = model(batch)
        with compiled_blocks(model)():
            compiled = model(batch)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
