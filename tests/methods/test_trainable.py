"""Which parameters train, per method: nothing of the frozen CLIP backbone, what the host trains, and the
method's own parts; every trainable parameter gets a gradient in a training step."""
import pytest
import torch

from mamol.methods import METHODS
from mamol.models.backbone import build_clip
from mamol.optim import parameter_groups
from mamol.settings import OptimSettings, from_config
from tests.helpers import natural_info, remote_info, tiny_batch, tiny_config, tiny_model

HOST_NATURAL = {"clip.visual.ln_post.weight", "clip.visual.ln_post.bias", "clip.visual.proj", "clip.ln_final.weight",
                "clip.ln_final.bias"}


@pytest.mark.parametrize("kind", ["remote", "natural"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_nothing_of_the_backbone_trains(method, kind):
    torch.manual_seed(0)
    net = tiny_model(remote_info() if kind == "remote" else natural_info(), method=method)
    backbone = {n for n, _ in build_clip("tiny", None, True).named_parameters()}
    prefix = "visual." if kind == "remote" else "clip."
    params = dict(net.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    # Every backbone tensor is still there under its open_clip name, frozen (except the host's own choice).
    host = HOST_NATURAL if kind == "natural" else set()
    for name in backbone:
        full = prefix + name.removeprefix("visual.") if kind == "remote" else prefix + name
        if kind == "remote" and not name.startswith("visual."):
            continue  # the remote host drops the text tower
        assert full in params, full
        assert params[full].requires_grad == (full in host), full
    own = {n for n in trainable if n.startswith(("method.", "visual.transformer.", "clip.transformer.",
                                                 "clip.visual.transformer."))}
    assert bool(own) == (method != "linear_probe")
    outside = trainable - own - host
    assert all(n.startswith(("tokenizers.", "head.", "heads.")) for n in outside), outside
    # A training step reaches every trainable parameter (none is dead weight), and AdamW gets each once. (LoRA's
    # A has a zero gradient while B is still at its zero init; it is reached all the same.)
    net(tiny_batch(kind)).sum().backward()
    dead = [n for n in trainable if params[n].numel() and params[n].grad is None]
    lora_a = {n for n in trainable if n.endswith((".lora.A", ".A")) and (".lora." in n or ".deltas." in n)}
    still = [n for n in trainable - lora_a - set(dead) if params[n].numel() and not params[n].grad.any()]
    assert not dead and not still, (dead, still)
    groups = parameter_groups(net, from_config(OptimSettings, tiny_config(method=method)))
    assert sum(len(g["params"]) for g in groups) == len(trainable)
