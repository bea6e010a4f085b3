"""The optimiser (mamol.optim): AdamW groups without weight decay on biases, norms and the pattern embedding, and
``lr_mult`` x the learning rate for the head(s). The schedule is tested in ``test_settings.py``."""
import pytest
import torch

from mamol.optim import build_optimizer, parameter_groups
from mamol.settings import OptimSettings, from_config
from tests.helpers import natural_info, remote_info, tiny_config, tiny_model

LR, DECAY, MULT = 1e-3, 0.05, 10.0


def groups_by_name(net: torch.nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    """(weight decay, learning rate) of each parameter, by name."""
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)]: (g["weight_decay"], g["lr"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("kind", ["remote", "natural"])
def test_groups_exempt_biases_norms_and_the_pattern_embedding_and_scale_the_head(kind):
    torch.manual_seed(0)
    net = tiny_model(remote_info() if kind == "remote" else natural_info())
    optim = from_config(OptimSettings, tiny_config(learning_rate=LR, weight_decay=DECAY, lr_mult=MULT))
    got = groups_by_name(net, parameter_groups(net, optim))
    assert set(got) == {n for n, p in net.named_parameters() if p.requires_grad}  # each trainable tensor once
    head = "head." if kind == "remote" else "heads.mmimdb."
    expected = {  # (weight decay, learning rate)
        f"{head}weight": (DECAY, LR * MULT),
        f"{head}bias": (0.0, LR * MULT),
        "method.patterns.image.proj.weight": (0.0, LR),  # a 2-D matrix, exempt as the pattern embedding
        "method.patterns.image.proj.bias": (0.0, LR),
    }
    blocks = "visual.transformer" if kind == "remote" else "clip.visual.transformer"
    expected |= {f"{blocks}.resblocks.3.mlp.adapter.{name}": (DECAY, LR) for name in ("dyn_A", "mod_B", "out.weight")}
    expected |= {f"{blocks}.resblocks.3.mlp.adapter.{name}": (0.0, LR) for name in ("out.bias", "router_in.bias")}
    if kind == "remote":
        expected["tokenizers.hsi.conv3.weight"] = (DECAY, LR)
    else:  # CLIP's own trainable norms and projection in the image-text host
        expected |= {"clip.visual.ln_post.weight": (0.0, LR), "clip.ln_final.bias": (0.0, LR),
                     "clip.visual.proj": (DECAY, LR)}
    assert {n: got[n] for n in expected} == expected
    # Everything else follows the same rule: decayed exactly when a matrix outside the pattern embedding.
    for name, p in net.named_parameters():
        if p.requires_grad:
            decayed = p.ndim >= 2 and not name.startswith("method.patterns.")
            assert got[name][0] == (DECAY if decayed else 0.0), name
            assert got[name][1] == (LR * MULT if name.startswith(head) else LR), name


def test_adamw_gets_the_groups_and_the_paper_betas():
    torch.manual_seed(0)
    net = tiny_model(remote_info())
    optim = from_config(OptimSettings, tiny_config(learning_rate=LR, weight_decay=DECAY, lr_mult=MULT))
    optimizer, _ = build_optimizer(net, optim, total_steps=10)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = sorted((g["weight_decay"], g["initial_lr"], len(g["params"])) for g in optimizer.param_groups)
    # no decay: pattern embedding (2), adapter biases (2 x 3), head bias; decay: adapter matrices (2 x 9),
    # tokenizer convolutions (4), head weight
    assert groups == [(0.0, LR, 8), (0.0, LR * MULT, 1), (DECAY, LR, 22), (DECAY, LR * MULT, 1)]
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-8 for g in optimizer.param_groups)
