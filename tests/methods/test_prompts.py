"""Prompt methods (mmp, dcp): zero-length prompts == the frozen towers, the sequence lengths the blocks see,
removal before pooling, the causal text mask, per-pattern and per-stream prompts, the attention-level
prefixes and DCP's correlated recursion."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mamol.errors import ConfigError
from mamol.methods.dcp import prompt_parts
from mamol.models.method import Rows
from mamol.models.prompting import extend_mask
from tests.helpers import natural_info, remote_info, tiny_model


def natural(method, **updates):
    torch.manual_seed(0)
    return tiny_model(natural_info(), method=method, **updates).double()


def remote(method, **updates):
    torch.manual_seed(0)
    return tiny_model(remote_info(), method=method, **updates).double()


LENGTH = 24  # tokens per row: the blocks take any length (the hosts give 197 and 77), short is fast


def towers(net):
    """(tower, transformer, tokens, mask, rows) of an image-text model: image and text (with CLIP's causal mask,
    cut to LENGTH), codes 0 / 1 / 2."""
    g = torch.Generator().manual_seed(1)
    codes = torch.tensor([0, 1, 2])
    present = torch.tensor([[True, True], [False, True], [True, False]])
    return [("image", net.clip.visual.transformer, torch.randn(3, LENGTH, 64, generator=g, dtype=torch.float64),
             None, Rows(codes, present, torch.full_like(codes, 1))),
            ("text", net.clip.transformer, torch.randn(3, LENGTH, 64, generator=g, dtype=torch.float64),
             net.clip.attn_mask[:LENGTH, :LENGTH].double(), Rows(codes, present, torch.full_like(codes, 0)))]


def remote_rows():
    """Six rows of the two-modality remote encoder: codes 0 / 1 / 2, each modality (HSI 0, LiDAR 1) where present."""
    codes, modality = torch.tensor([0, 0, 1, 2, 0, 2]), torch.tensor([0, 1, 1, 0, 0, 0])
    return Rows(codes, torch.stack([codes != 1, codes != 2], dim=1), modality)


def lengths_seen(transformer):
    """Register hooks recording the sequence length each block runs on."""
    seen = []
    for block in transformer.resblocks:
        block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    return seen


def run(net, tower, transformer, x, rows, mask):
    with torch.no_grad():
        return net.method.run_blocks(tower, transformer, x, rows, attn_mask=mask)


def test_extended_clip_mask_is_causal_over_prompts_and_text():
    causal = torch.full((5, 5), float("-inf")).triu(1)
    torch.testing.assert_close(extend_mask(causal[2:, 2:], 2), causal)
    assert extend_mask(None, 3) is None and extend_mask(causal, 0) is causal


@pytest.mark.parametrize("method,updates", [("mmp", dict(prompt_length=0)), ("mmp", dict(prompt_depth=0)),
                                            ("mmp", dict(prompt_length=0, prompt_type="attention")),
                                            ("dcp", dict(prompt_length=0)), ("dcp", dict(prompt_depth=0))])
def test_zero_length_prompts_are_the_frozen_towers(method, updates):
    net = natural(method, **updates)
    for tower, transformer, x, mask, rows in towers(net):
        torch.testing.assert_close(run(net, tower, transformer, x, rows, mask),
                                   transformer(x, attn_mask=mask), rtol=0, atol=0)


@pytest.mark.parametrize("method,updates,expected", [
    ("mmp", {}, [16, 32, 32, 32]),  # input-level: P = 16 prepended at each of the first 2 blocks, kept after
    ("mmp", dict(prompt_type="attention"), [0, 0, 0, 0]),  # prefixes live in the keys/values only
    ("dcp", {}, [36, 36, 36, 36]),  # layer + common + dynamic, 12 tokens each, from block 0 to the end
    ("dcp", dict(prompt_type="correlated+common"), [24, 24, 24, 24]),
    ("dcp", dict(prompt_type="none", prompt_length=6), [2, 2, 2, 2]),
])
def test_blocks_see_the_longer_sequence_and_prompts_are_removed(method, updates, expected):
    net = natural(method, **updates)
    for tower, transformer, x, mask, rows in towers(net):
        seen = lengths_seen(transformer)
        out = run(net, tower, transformer, x, rows, mask)
        assert out.shape == x.shape
        assert [s - x.shape[1] for s in seen] == expected, tower
        assert (out - transformer(x, attn_mask=mask)).abs().max() > 1e-6  # the prompts do something


@pytest.mark.parametrize("method,updates", [("mmp", {}), ("mmp", dict(prompt_type="attention")),
                                            ("dcp", dict(prompt_type="correlated+common"))])
def test_text_tokens_never_see_later_text_tokens(method, updates):
    """The causal mask is extended consistently: changing tokens after position 10 leaves 0..10 unchanged."""
    net = natural(method, **updates)
    tower, transformer, x, mask, rows = towers(net)[1]
    later = x.clone()
    later[:, 11:] += torch.randn_like(later[:, 11:])
    a, b = run(net, tower, transformer, x, rows, mask), run(net, tower, transformer, later, rows, mask)
    torch.testing.assert_close(a[:, :11], b[:, :11], rtol=0, atol=1e-12)
    assert (a[:, 11:] - b[:, 11:]).abs().max() > 1e-3


def bump(tensor):
    """Add noise in place (not a constant: the blocks' LayerNorms ignore a constant shift of a token)."""
    tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(5), dtype=tensor.dtype))


def changed_rows(net, perturb):
    """Which of the remote rows' encoder outputs change when ``perturb(net)`` edits a parameter in place."""
    transformer = net.visual.transformer
    x = torch.randn(6, LENGTH, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    before = run(net, "image", transformer, x, remote_rows(), None)
    with torch.no_grad():
        perturb(net)
    after = run(net, "image", transformer, x, remote_rows(), None)
    return ((after - before).abs().amax(dim=(1, 2)) > 1e-9).tolist()


def test_mmp_prompts_are_per_pattern_and_per_modality_stream():
    net = remote("mmp")
    assert net.method.prompts["image"].shape == (2, 3, 2, 16, 64)  # streams, patterns, blocks, tokens, width
    # rows (code, modality): (0,hsi) (0,lidar) (1,lidar) (2,hsi) (0,hsi) (2,hsi)
    assert changed_rows(net, lambda n: bump(n.method.prompts["image"][0, 0])) == [1, 0, 0, 0, 1, 0]
    assert changed_rows(net, lambda n: bump(n.method.prompts["image"][1, 1])) == [0, 0, 1, 0, 0, 0]
    assert changed_rows(net, lambda n: bump(n.method.prompts["image"][0, 2, 1])) == [0, 0, 0, 1, 0, 1]


def test_mmp_initialisation_marks_each_pattern():
    net = natural("mmp")
    prompts = net.method.prompts["text"][0]  # (patterns, blocks, tokens, width)
    for t in range(3):
        assert prompts[t, :, t].eq(1).all() and prompts[t].abs().sum() == prompts.shape[1] * 64


def test_attention_prefix_is_softmax_over_prompt_and_token_keys():
    net = natural("mmp", prompt_type="attention")
    attention = net.clip.transformer.resblocks[0].attn
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 64, generator=g, dtype=torch.float64)
    pk, pv = (torch.randn(2, 3, 64, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.full((5, 5), float("-inf"), dtype=torch.float64).triu(1)
    with torch.no_grad(), attention.prefixed(pk, pv):
        out = attention(x, x, x, need_weights=False, attn_mask=mask)[0]
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, -1)
    k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
    heads = 2
    expected = torch.zeros_like(x)
    for h in range(heads):
        part = slice(h * 32, (h + 1) * 32)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / 32 ** 0.5 + F.pad(mask, (3, 0))  # (2, 5, 8)
        expected[..., part] = scores.softmax(-1) @ v[..., part]
    expected = attention.out_proj(expected)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_dcp_layer_prompts_follow_the_correlated_recursion():
    net = natural("dcp")
    method = net.method
    text, image = method.streams["text"], method.streams["image"]
    layers = method.layer_prompts()  # per stream (modality order text, image): (patterns, blocks, n, width)
    with torch.no_grad():
        for t, (text_present, image_present) in enumerate([(1, 1), (0, 1), (1, 0)]):  # codes 0, 1, 2
            previous = [text.start[text_present], image.start[image_present]]
            for i in range(2):
                joint = torch.cat(previous, -1)
                previous = [text.project[i](joint), image.project[i](joint)]
                torch.testing.assert_close(layers[0][t, i], previous[0])
                torch.testing.assert_close(layers[1][t, i], previous[1])


def test_dcp_streams_map_onto_the_shared_remote_encoder():
    net = remote("dcp")
    assert set(net.method.streams) == {"hsi", "lidar"}
    # the last layer's projection and the common projection of LiDAR touch LiDAR rows only
    lidar = net.method.streams["lidar"]
    assert changed_rows(net, lambda n: bump(lidar.project[-1][-1].bias)) == [0, 1, 1, 0, 0, 0]
    assert changed_rows(net, lambda n: bump(lidar.common_project[-1].bias)) == [0, 1, 1, 0, 0, 0]
    # HSI's dynamic queries of pattern 2 touch the HSI rows of pattern 2 only
    assert changed_rows(net, lambda n: bump(n.method.streams["hsi"].queries[2])) == [0, 0, 0, 1, 0, 1]


def test_dcp_dynamic_queries_are_trained_parameters():
    net = remote("dcp")
    x = torch.randn(6, LENGTH, 64, dtype=torch.float64)
    net.method.run_blocks("image", net.visual.transformer, x, remote_rows()).sum().backward()
    for stream in net.method.streams.values():
        assert stream.queries.requires_grad and stream.queries.grad.abs().sum() > 0


def test_prompt_type_selects_dcp_parts_and_leaves_mamol_alone():
    assert prompt_parts("input") == {"correlated", "dynamic", "common"} and prompt_parts("none") == set()
    assert prompt_parts("Dynamic+common") == {"dynamic", "common"}
    with pytest.raises(ConfigError, match="prompt_type='deep'"):
        remote("dcp", prompt_type="deep")
    with pytest.raises(ConfigError, match="prompt_type='both'"):
        remote("mmp", prompt_type="both")
    with pytest.raises(ConfigError, match="multiple of 3"):
        remote("dcp", prompt_length=10)
    with pytest.raises(ConfigError, match="prompt_depth=5"):
        remote("mmp", prompt_depth=5)
    x = torch.randn(6, LENGTH, 64, dtype=torch.float64)
    a, b = remote("mamol"), remote("mamol", prompt_type="attention")
    assert a.state_dict().keys() == b.state_dict().keys()
    torch.testing.assert_close(run(a, "image", a.visual.transformer, x, remote_rows(), None),
                               run(b, "image", b.visual.transformer, x, remote_rows(), None), rtol=0, atol=0)


def test_dcp_without_correlation_has_independent_layer_prompts():
    net = remote("dcp", prompt_type="dynamic")
    hsi = net.method.streams["hsi"]
    assert hsi.layers.shape == (3, 2, 12, 64) and not hasattr(hsi, "project") and not hasattr(hsi, "common_project")
    assert net.method.common is None
    before = copy.deepcopy(net)
    assert changed_rows(net, lambda n: bump(n.method.streams["hsi"].layers[0, 1])) == [1, 0, 0, 0, 1, 0]
    assert changed_rows(before, lambda n: None) == [0] * 6
