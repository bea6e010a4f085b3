"""MoRA: the adapted weights are the release's formula written out by hand (shared pair A(BᵀB)Aᵀ / B(AᵀA)Bᵀ, the
stream's LoRA, two DoRA directions with their magnitudes), the release's start, the remote mapping (one factor
per modality, a row takes its modality's stream), parameter counts, keys, and short runs."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mamol.errors import ConfigError
from mamol.methods import METHODS
from mamol.methods.mora import RELEASE, MoRA, MoRAOptions, MoRAProjection
from mamol.models import adapter
from mamol.models.backbone import build_clip
from mamol.models.method import Rows
from mamol.settings import resolve_model
from tests.helpers import natural_info, remote_info, run_experiment, tiny_config, tiny_model, trainable_state

ALPHA = 0.3


def options(**changes) -> MoRAOptions:
    base = dict(adapter_layers=None, adapter_layers_text=None, mora_rank=3, mora_shared_rank=2, mora_alpha=ALPHA,
                mora_targets=("q", "k", "v"), mora_dropout=0.0)
    return MoRAOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_clip("tiny", None, True).double()


def tokens(n=3, length=10, seed=1):
    return torch.randn(n, length, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def column_norms(v):
    """‖V‖_c by hand: the root of the summed squares down each column."""
    return torch.sqrt((v * v).sum(dim=0, keepdim=True)).clamp(min=1e-5)


def release_weight(w, shared, a, b, m_shared, m_specific, alpha):
    """The release's ``new_weight`` (clip_mora.py, TextMoRALayer.forward): two directions, two magnitudes."""
    shared_numerator = w + alpha * shared.T
    specific_numerator = w + alpha * (a @ b).T
    return (m_shared * shared_numerator / column_norms(shared_numerator)
            + m_specific * specific_numerator / column_norms(specific_numerator))


def adapted_blocks(transformer):
    """Indices of the blocks whose attention carries MoRA projections."""
    return [i for i, b in enumerate(transformer.resblocks) if getattr(b.attn, "deltas", None)]


def scramble(method, adapted):
    """Every trainable tensor of MoRA drawn at random (B leaves zero, magnitudes leave ‖W‖_c)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in [*method.parameters(), *(q for t in adapted for q in t.parameters() if q.requires_grad)]:
            p.copy_(p + 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_natural_weights_are_the_release_formula_written_out(clip):
    method = MoRA(options(), "natural", ("text", "image"))
    image, text = copy.deepcopy(clip.visual.transformer), copy.deepcopy(clip.transformer)
    method.attach("image", image)
    method.attach("text", text)
    method.double(), image.double(), text.double()
    scramble(method, (image, text))
    merged = {"image": copy.deepcopy(clip.visual.transformer), "text": copy.deepcopy(clip.transformer)}
    for tower, adapted in (("image", image), ("text", text)):
        assert adapted_blocks(adapted) == [2, 3]  # the last two blocks of each tower
        for j, i in enumerate((2, 3)):
            a, b = method.shared.factors["text"][j], method.shared.factors["image"][j]  # A (d_t, r), B (d_v, r)
            shared = a @ (b.T @ b) @ a.T if tower == "text" else b @ (a.T @ a) @ b.T  # compute_shared_lora
            for k, name in enumerate("qkv"):
                p: MoRAProjection = adapted.resblocks[i].attn.deltas[name]
                rows = slice(64 * k, 64 * (k + 1))
                w = clip.visual.transformer.resblocks[i].attn.in_proj_weight[rows] if tower == "image" else \
                    clip.transformer.resblocks[i].attn.in_proj_weight[rows]
                with torch.no_grad():
                    merged[tower].resblocks[i].attn.in_proj_weight[rows] = release_weight(
                        w, shared, p.A[0], p.B[0], p.shared_magnitude[0], p.specific_magnitude[0], ALPHA)
    mask = clip.attn_mask[:10, :10].double()
    with torch.no_grad():
        for adapted, frozen, reference, m in ((image, clip.visual.transformer, merged["image"], None),
                                               (text, clip.transformer, merged["text"], mask)):
            out = adapted(tokens(), attn_mask=m)
            assert (out - frozen(tokens(), attn_mask=m)).abs().max() > 1e-2
            torch.testing.assert_close(out, reference(tokens(), attn_mask=m), rtol=1e-9, atol=1e-9)


def test_the_release_start_is_not_the_frozen_backbone_but_the_specific_term_is(clip):
    """B = 0 makes the specific term exactly W; the random shared pair adds a term of W's column norms, so the
    adapted weight starts at W + ‖W‖_c · dir(W + α S) (2W with a zero pair); with m_shared = 0 it is the frozen W."""
    method = MoRA(options(), "natural", ("text", "image"))
    image, text = copy.deepcopy(clip.visual.transformer), copy.deepcopy(clip.transformer)
    method.attach("image", image)
    method.attach("text", text)
    method.double(), image.double(), text.double()
    p: MoRAProjection = image.resblocks[3].attn.deltas["v"]
    w = clip.visual.transformer.resblocks[3].attn.in_proj_weight[128:]
    with torch.no_grad():
        torch.testing.assert_close(p.specific_magnitude[0], w.norm(dim=0))  # both magnitudes start at ‖W‖_c
        torch.testing.assert_close(p.shared_magnitude[0], w.norm(dim=0))
        assert (p.weight(0) - w).abs().max() > 0.1 * w.abs().max()  # far from W at the start
        factors = {m: f.clone() for m, f in method.shared.factors.items()}
        for f in method.shared.factors.values():
            f.zero_()
        torch.testing.assert_close(p.weight(0), 2 * w, rtol=1e-12, atol=1e-12)
        for f, saved in zip(method.shared.factors.values(), factors.values()):
            f.copy_(saved)
        for adapted in (image, text):
            for module in adapted.modules():
                if isinstance(module, MoRAProjection):
                    module.shared_magnitude.zero_()
        mask = clip.attn_mask[:10, :10].double()
        torch.testing.assert_close(image(tokens()), clip.visual.transformer(tokens()), rtol=0, atol=1e-12)
        torch.testing.assert_close(text(tokens(), attn_mask=mask), clip.transformer(tokens(), attn_mask=mask),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("modalities", [("hsi", "lidar"), ("hsi", "lidar", "sar")])
def test_remote_rows_take_their_modality_stream_and_the_pair_couples_the_modalities(clip, modalities, monkeypatch):
    method = MoRA(options(), "remote", modalities)
    adapted = copy.deepcopy(clip.visual.transformer)
    method.attach("image", adapted)
    method.double(), adapted.double()
    scramble(method, (adapted,))
    assert adapted_blocks(adapted) == [2, 3]  # remote: the last half
    u = method.shared.factors
    assert sorted(u) == sorted(modalities) and u["hsi"].shape == (2, 64, 2)
    p: MoRAProjection = adapted.resblocks[2].attn.deltas["k"]
    w = clip.visual.transformer.resblocks[2].attn.in_proj_weight[64:128]
    for s, m in enumerate(modalities):
        others = [n for n in modalities if n != m]
        shared = sum(u[m][0] @ (u[n][0].T @ u[n][0]) @ u[m][0].T for n in others)  # Σ pairwise couplings
        if len(modalities) == 2:  # the release's pair: A = U_0 (the "text" side), B = U_1 (the "vision" side)
            a, b = u[modalities[0]][0], u[modalities[1]][0]
            torch.testing.assert_close(shared, a @ (b.T @ b) @ a.T if s == 0 else b @ (a.T @ a) @ b.T)
        expected = release_weight(w, shared, p.A[s], p.B[s], p.shared_magnitude[s], p.specific_magnitude[s], ALPHA)
        torch.testing.assert_close(p.weight(s), expected, rtol=1e-9, atol=1e-9)
    # One batched call of mixed rows equals each modality's rows run alone.
    x, n = tokens(n=2 * len(modalities)), len(modalities)
    modality = torch.arange(n).repeat(2)  # rows 0, 1, .., n-1, 0, 1, ..
    rows = Rows(codes=torch.zeros(2 * n, dtype=torch.long), present=torch.ones(2 * n, n, dtype=torch.bool),
                modality=modality)
    with torch.no_grad():
        together = method.run_blocks("image", adapted, x, rows)
        for s in range(n):
            idx = (modality == s).nonzero().squeeze(1)
            alone = method.run_blocks("image", adapted, x[idx], Rows(rows.codes[idx], rows.present[idx], modality[idx]))
            torch.testing.assert_close(together[idx], alone, rtol=1e-9, atol=1e-9)
        assert (together[0] - together[n]).abs().max() > 0  # the streams differ
        monkeypatch.setattr(adapter, "SPARSE_DEVICES", frozenset())  # the GPU's masked path: the same rows
        torch.testing.assert_close(method.run_blocks("image", adapted, x, rows), together, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="run_blocks"):
        adapted(x)


def test_dropout_is_on_the_whole_input_of_the_projection(clip):
    method = MoRA(options(mora_dropout=0.5), "natural", ("text", "image"))
    image, text = copy.deepcopy(clip.visual.transformer), copy.deepcopy(clip.transformer)
    method.attach("image", image)
    method.attach("text", text)
    method.double(), image.double(), text.double()
    p: MoRAProjection = image.resblocks[2].attn.deltas["q"]
    x, w = tokens(), clip.visual.transformer.resblocks[2].attn.in_proj_weight[:64]
    with torch.no_grad():
        torch.manual_seed(5)
        change = p.train()(x)
        torch.manual_seed(5)
        dropped = F.dropout(x, 0.5, training=True)
        torch.testing.assert_close(change, F.linear(dropped, p.weight(0)) - F.linear(x, w))  # y = W' drop(x) + b
        torch.testing.assert_close(p.eval()(x), F.linear(x, p.weight(0) - w))


def test_trainable_parameters_counted_by_hand():
    """Tiny backbone (width 64, 4 blocks; adapted: the last two), defaults k, v at rank 8, shared rank 8."""
    per_stream = 2 * 64 * 8 + 2 * 64  # A (64, 8), B (8, 64), two magnitudes (64,), per projection
    for info, streams, factors in ((remote_info(), 2, 2), (remote_info(("hsi", "lidar", "sar"), (12, 1, 2)), 3, 3),
                                   (natural_info(), 2, 2)):  # natural: one stream per tower, two towers
        net = tiny_model(info, method="mora")
        own = {n: p.numel() for n, p in net.named_parameters() if p.requires_grad and ".transformer." in n}
        shared = {n: p.numel() for n, p in net.named_parameters() if n.startswith("method.")}
        assert sum(own.values()) == 2 * 2 * streams * per_stream  # 2 blocks x k, v
        assert sum(shared.values()) == factors * 2 * 64 * 8  # U_m (2 blocks, 64, 8)
    assert sum(own.values()) + sum(shared.values()) == 11264
    net = tiny_model(remote_info(), method="mora", mora_rank=4, mora_shared_rank=2, mora_targets=["q"],
                     adapter_layers=[0, 1, 2])
    total = sum(p.numel() for n, p in net.named_parameters()
                if p.requires_grad and n.startswith(("method.", "visual.")))
    assert total == 3 * 2 * (2 * 64 * 4 + 2 * 64) + 2 * 3 * 64 * 2


def test_defaults_are_the_release_model_config_for_both_kinds():
    assert METHODS["mora"] is MoRA and MoRAOptions.CAPACITY == "mora_rank"
    for kind in ("remote", "natural"):
        o = resolve_model(tiny_config(method="mora"), kind, MoRAOptions)[2].options
        assert (o.mora_rank, o.shared_rank, o.mora_alpha, o.mora_targets, o.mora_dropout) == (8, 8, 0.1, ("k", "v"),
                                                                                              0.1)
        assert {k: getattr(o, k) for k in RELEASE["hatememes"]} == RELEASE["hatememes"]  # the model config's
    for values in RELEASE.values():  # the release's other experiments are valid settings, given as keys
        o = resolve_model(tiny_config(method="mora", **values), "natural", MoRAOptions)[2].options
        assert {k: getattr(o, k) for k in values} == values and o.shared_rank == values["mora_rank"]
    assert MoRAOptions.CAPACITY in tiny_config()  # a config key the budget can scale


@pytest.mark.parametrize("changes,message", [
    (dict(mora_targets=["q", "o"]), r"mora_targets=\['q', 'o'\]"),
    (dict(mora_rank=0), "mora_rank and mora_shared_rank must be >= 1"),
    (dict(mora_alpha=0.0), "mora_alpha must be > 0"),
    (dict(adapter_layers_text=[3]), "adapter_layers and adapter_layers_text must name as many blocks"),
])
def test_bad_keys_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model(natural_info(), method="mora", **changes)


def test_remote_training_moves_moras_tensors_and_test_only_reproduces_it(tmp_path, remote_root):
    base = dict(data_root=str(remote_root), datasets=["synthetic"], batch_size=8, per_gpu_batchsize=8, max_epoch=1,
                log_dir=str(tmp_path / "runs"), missing_table_root=str(tmp_path / "tables"), method="mora",
                learning_rate=1e-3)
    fitted = run_experiment("remote", **base, exp_name="fit")
    state = trainable_state(fitted["checkpoint"])
    assert {"model.method.shared.factors.hsi", "model.method.shared.factors.lidar"} <= set(state)
    full = torch.load(fitted["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    magnitude = full["model.visual.transformer.resblocks.2.attn.deltas.v.specific_magnitude"]  # (2 streams, 64)
    assert magnitude.shape == (2, 64) and not torch.equal(magnitude[0], magnitude[1])  # each modality its own
    evaluated = run_experiment("remote", **base, exp_name="eval", test_only=True, load_path=fitted["checkpoint"])
    assert evaluated["method"] == "mora" and evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)
