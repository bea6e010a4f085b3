"""Specialists: each row equals plain LoRA with its pattern's set, gradients reach only the present patterns' sets,
the parameter count is one LoRA per pattern, and runs (remote, image–text) train every pattern's set."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch

from mamol.conversion.mmimdb import prepare_mmimdb
from mamol.methods.specialists import PatternLowRank, SpecialistsOptions
from mamol.missing import valid_codes
from mamol.models import adapter
from tests.fakes.natural import make_mmimdb_raw
from tests.helpers import natural_info, remote_info, run_experiment, tiny_batch, tiny_model

TARGETS = ["q", "v", "o", "mlp"]
"""Every kind of placement: packed q/v deltas, the attention's output and both MLP layers."""

INFOS = {"remote": remote_info(), "remote3": remote_info(("hsi", "lidar", "sar"), (12, 1, 2)),
         "natural": natural_info()}


def batch(kind: str, codes: list[int]) -> dict:
    """:func:`tiny_batch` of ``kind`` (4 rows) with these missing codes (remote3: SAR added)."""
    data = tiny_batch("natural" if kind == "natural" else "remote")
    if kind == "remote3":
        data["sar"] = torch.rand(4, 2, 14, 14, generator=torch.Generator().manual_seed(3))
    data["missing_type"] = torch.tensor(codes)
    return data


def trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """Every trainable tensor drawn at std 0.1, so that each set's update (B = 0 at the start) matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(std=0.1)
    return net


def set_names(net: torch.nn.Module) -> dict[str, int]:
    """Trainable parameter name -> the pattern of its set."""
    return {n: int(n.split(".sets.")[1].split(".")[0]) for n, p in net.named_parameters()
            if p.requires_grad and ".sets." in n}


@pytest.mark.parametrize("kind,codes", [("remote", [0, 1, 2, 0]), ("remote3", [3, 4, 0, 6]),
                                        ("natural", [0, 1, 2, 0])])
def test_each_row_equals_lora_with_its_patterns_set(kind, codes):
    spec = trained_like(tiny_model(INFOS[kind], method="specialists", lora_targets=TARGETS)).double().eval()
    data = {k: v.double() if v.is_floating_point() else v for k, v in batch(kind, codes).items()}
    with torch.no_grad():
        out = spec(data)
    lora = tiny_model(INFOS[kind], method="lora", lora_targets=TARGETS).double().eval()
    for t in sorted(set(codes)):
        # Plain LoRA holding pattern t's set and the same shared parts (tokenizers, head, ...).
        state = {k.replace(f".sets.{t}.", "."): v for k, v in spec.state_dict().items()
                 if ".sets." not in k or f".sets.{t}." in k}
        missing, unexpected = lora.load_state_dict(state, strict=False)
        # Image-text: a tower has no set for a pattern missing its modality (never run for those rows).
        absent = {1: "clip.transformer.", 2: "clip.visual."}.get(t) if kind == "natural" else None
        assert not unexpected and all(absent and k.startswith(absent) for k in missing), missing
        rows = [n for n, c in enumerate(codes) if c == t]
        with torch.no_grad():
            expected = lora(data)
        torch.testing.assert_close(out[rows], expected[rows], rtol=1e-6, atol=1e-6)
        other = [n for n, c in enumerate(codes) if c != t]
        assert (out[other] - expected[other]).abs().max() > 1e-3  # the other rows use other sets


@pytest.mark.parametrize("kind,codes,reached", [("remote", [0, 2, 0, 2], {0, 2}), ("remote3", [5, 5, 1, 5], {1, 5}),
                                                ("natural", [0, 2, 2, 0], {0, 2})])
def test_a_batch_trains_only_the_sets_of_its_patterns(kind, codes, reached):
    net = trained_like(tiny_model(INFOS[kind], method="specialists"))
    net(batch(kind, codes)).sum().backward()
    params = dict(net.named_parameters())
    got = {name: params[name].grad for name in set_names(net)}
    for name, t in set_names(net).items():
        if t in reached and (kind != "natural" or not (".visual." in name and t == 2)):
            assert got[name] is not None and got[name].abs().sum() > 0, name
        else:  # None, not zeros: AdamW then leaves the set alone (no decay, no momentum step)
            assert got[name] is None, name


@pytest.mark.parametrize("kind", ["remote", "remote3", "natural"])
def test_trainable_parameters_are_one_lora_per_pattern_plus_the_shared_parts(kind):
    def trainable(net: torch.nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in net.named_parameters() if p.requires_grad}

    spec = trainable(tiny_model(INFOS[kind], method="specialists"))
    lora = trainable(tiny_model(INFOS[kind], method="lora"))
    adapter = sum(v for n, v in lora.items() if ".deltas." in n)  # q and v updates of the adapted blocks
    shared = sum(lora.values()) - adapter
    assert shared == sum(v for n, v in spec.items() if ".sets." not in n)  # tokenizers, head (and CLIP's norms)
    # Remote: one shared encoder, a set per pattern (3 or 7). Image-text: each tower has the 2 patterns where its
    # modality is present, so one LoRA per pattern on the tower's side: 2 x LoRA.
    patterns = {"remote": 3, "remote3": 7, "natural": 2}[kind]
    assert sum(spec.values()) == patterns * adapter + shared
    assert len(valid_codes(len(INFOS[kind].modalities))) == {"remote": 3, "remote3": 7, "natural": 3}[kind]


def test_sets_per_tower_capacity_key_and_an_update_outside_the_method():
    net = tiny_model(INFOS["natural"], method="specialists")
    assert net.method.tower_patterns("image") == (0, 1) and net.method.tower_patterns("text") == (0, 2)
    assert tiny_model(INFOS["remote"], method="specialists").method.tower_patterns("image") == (0, 1, 2)
    assert SpecialistsOptions.CAPACITY == "lora_rank" and "CAPACITY" not in {f.name for f in fields(SpecialistsOptions)}
    update = net.clip.visual.transformer.resblocks[-1].attn.deltas["q"]
    assert isinstance(update, PatternLowRank)
    with pytest.raises(RuntimeError, match="run_blocks"):
        update(torch.zeros(1, 3, 64))


def _trained_sets(checkpoint: str) -> dict[str, float]:
    """Largest |B| of each pattern's sets in a saved model (B starts at zero: > 0 means that set trained)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    out: dict[str, float] = {}
    for name, value in state.items():
        if ".sets." in name and name.endswith(".B"):
            tower = "text" if "clip.transformer." in name else "image"
            key = f"{tower}:{name.split('.sets.')[1].split('.')[0]}"
            out[key] = max(out.get(key, 0.0), value.abs().max().item())
    return out


def test_remote_run_trains_every_patterns_set_and_test_only_reproduces_it(remote_root, tmp_path):
    base = dict(data_root=str(remote_root), datasets=["synthetic"], log_dir=str(tmp_path / "runs"),
                missing_table_root=str(tmp_path / "tables"), batch_size=16, per_gpu_batchsize=16, max_epoch=1,
                max_steps=3, check_val_every_n_epoch=1, learning_rate=1e-3, limit_test=2, method="specialists")
    fitted = run_experiment("remote", **base, exp_name="fit")  # training missing 0.7 / both: all three patterns
    assert fitted["method"] == "specialists" and "OA" in fitted["metrics"]
    trained = _trained_sets(fitted["checkpoint"])
    assert sorted(trained) == ["image:0", "image:1", "image:2"] and min(trained.values()) > 0
    evaluated = run_experiment("remote", **base, exp_name="eval", test_only=True, load_path=fitted["checkpoint"])
    assert evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)


@pytest.fixture(scope="module")
def official_mmimdb(tmp_path_factory) -> Path:
    """A tiny MM-IMDb in the official download's layout (``dataset/<id>.jpeg`` + ``.json``), converted."""
    root = tmp_path_factory.mktemp("official_mmimdb")
    prepare_mmimdb(make_mmimdb_raw(root / "raw", counts=(8, 3, 4), seed=1, layout="official").root, root / "arrow",
                   progress=False)
    return root / "arrow"


def test_image_text_run_trains_each_towers_sets(official_mmimdb, tmp_path):
    report = run_experiment("task_finetune_mmimdb", data_root=str(official_mmimdb), log_dir=str(tmp_path / "runs"),
                            missing_table_root=str(tmp_path / "tables"), batch_size=4, per_gpu_batchsize=4,
                            max_epoch=1, val_check_interval=1.0, method="specialists", exp_name="mmimdb")
    assert report["method"] == "specialists" and "F1_macro" in report["metrics"]
    trained = _trained_sets(report["checkpoint"])
    assert sorted(trained) == ["image:0", "image:1", "text:0", "text:2"]  # a set where the tower's modality is
    assert min(trained.values()) > 0  # present, each reached by its pattern's rows


@pytest.mark.parametrize("kind,codes", [("remote", [0, 2, 0, 2]), ("remote3", [5, 5, 1, 6]), ("natural", [0, 1, 0, 0])])
def test_the_sync_free_formula_equals_the_split_rows(monkeypatch, kind, codes):
    """Off the CPU every set runs on every row, masked (no host read): same outputs and gradients (a set no row
    needs: zero gradient instead of none)."""
    net = trained_like(tiny_model(INFOS[kind], method="specialists", lora_targets=TARGETS))
    data = batch(kind, codes)
    results = []
    for devices in (frozenset({"cpu"}), frozenset()):
        monkeypatch.setattr(adapter, "SPARSE_DEVICES", devices)
        net.zero_grad(set_to_none=True)
        out = net(data)
        (out * torch.arange(out.shape[-1])).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    (split, split_grads), (dense, dense_grads) = results
    torch.testing.assert_close(split, dense, rtol=1e-6, atol=1e-6)
    for name, grad in dense_grads.items():
        expected = split_grads[name] if split_grads[name] is not None else torch.zeros_like(grad)
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert any(g is None for g in split_grads.values()) and all(g is not None for g in dense_grads.values())
