"""Matched budgets (``budget`` key): every scalable method names its capacity key, counts on the meta device are
the built model's, the solver lands within 5 % of MaMOL's (or LoRA's) share of trainable parameters on the tiny
backbone and on ViT-B/16 Houston shapes (the values docs/rivals.md prints), refusals name what to change, and a
run records the chosen value in config.json and test_results.json."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from mamol.bench import houston_info
from mamol.errors import ConfigError
from mamol.experiment import defaults
from mamol.methods import METHODS, build_model, method_class
from mamol.methods.budget import TOLERANCE, closest, count, settle
from mamol.runs import trainable_parameters
from mamol.settings import resolve_model
from tests.helpers import remote_info, run_experiment, short_run, tiny_config, tiny_model

SCALABLE = sorted(name for name, cls in METHODS.items() if cls.Options.CAPACITY is not None)


def settled(cfg: dict, infos) -> tuple:
    """(settings of the model, settled MethodSettings) of ``cfg`` on ``infos``."""
    kind = infos[0].kind
    backbone, model, method = resolve_model(cfg, kind, method_class(cfg["method"]).Options)
    return (backbone, model), settle(cfg, kind, backbone, model, method, infos)


def share(method, record) -> float:
    """Relative difference of the settled method's share (beyond linear_probe's) from the reference's."""
    floor = record["shared_parameters"]
    return (record["parameters"] - record["reference_parameters"]) / (record["reference_parameters"] - floor)


def test_every_method_names_an_integer_capacity_key_or_none():
    assert METHODS["linear_probe"].Options.CAPACITY is None
    expected = {"mamol": "adapter_rank", "moe_lora": "adapter_rank", "lora": "lora_rank", "mmp": "prompt_length",
                "dcp": "prompt_length"}
    assert {name: METHODS[name].Options.CAPACITY for name in expected} == expected
    for name in SCALABLE:
        options = METHODS[name].Options
        hints = typing.get_type_hints(options)
        assert int in (typing.get_args(hints[options.CAPACITY]) or (hints[options.CAPACITY],)), name
        assert options.CAPACITY in {f.name for f in dataclasses.fields(options)}


@pytest.mark.parametrize("method, updates", [("mamol", {}), ("linear_probe", {}), ("lora", {"lora_rank": 3}),
                                             ("moe_lora", {"adapter_rank": 5}), ("mmp", {"prompt_length": 7}),
                                             ("dcp", {"prompt_length": 9}), ("dcp", {"dcp_variant": "release"})])
def test_the_meta_count_is_the_built_models_count(method, updates):
    info = remote_info()
    cfg = tiny_config(method=method, **updates)
    (backbone, model), chosen = settled(cfg, [info])
    assert count(backbone, model, chosen, [info]) == trainable_parameters(tiny_model(info, method=method, **updates))


@pytest.mark.parametrize("method", SCALABLE)
def test_counts_grow_with_the_capacity_key(method):
    info = remote_info()
    cfg = tiny_config(method=method)
    (backbone, model), chosen = settled(cfg, [info])
    step = chosen.options.capacity_step()
    counts = [count(backbone, model, dataclasses.replace(chosen, options=dataclasses.replace(
        chosen.options, **{chosen.options.CAPACITY: k * step})), [info]) for k in (1, 2, 4, 8)]
    assert counts == sorted(counts) and len(set(counts)) == 4


def test_closest_picks_the_nearest_multiple_of_the_step_and_the_smaller_on_a_tie():
    assert closest(lambda v: 10 * v, 1234, 1) == 123
    assert closest(lambda v: 10 * v, 1236, 1) == 124
    assert closest(lambda v: 10 * v, 1235, 1) == 123  # tie: the smaller
    assert closest(lambda v: 10 * v, 1235, 3) == 123  # 1230 vs 1260
    assert closest(lambda v: 10 * v, 5, 3) == 3  # below the smallest value: the smallest
    assert closest(lambda v: 10 * v, 10**9, 1, largest=64) == 64  # beyond the largest: the largest


@pytest.mark.parametrize("method, updates", [("lora", {}), ("moe_lora", {}), ("mmp", {}),
                                             ("mmp", {"prompt_type": "attention"}), ("mamol", {})])
def test_matched_budget_is_within_5_percent_of_mamol_on_the_tiny_backbone(method, updates):
    info = remote_info()
    cfg = tiny_config(method=method, budget="matched", **updates)
    _, chosen = settled(cfg, [info])
    record = chosen.capacity
    mamol = trainable_parameters(tiny_model(info))
    built = trainable_parameters(tiny_model(info, method=method, budget="matched", **updates))
    assert record["reference"] == "mamol" and record["reference_parameters"] == mamol
    assert built == record["parameters"]  # the model a run builds trains exactly the recorded count
    assert record["shared_parameters"] == trainable_parameters(tiny_model(info, method="linear_probe"))
    assert abs(share(chosen, record)) <= TOLERANCE and abs(built - mamol) <= TOLERANCE * mamol
    key, value = record["key"], record["value"]
    assert getattr(chosen.options, key) == value and value % chosen.options.capacity_step() == 0
    if method == "mamol":
        assert value == 8  # MaMOL matched to itself keeps its sizes


# The values docs/rivals.md and README print (remote Houston 2013 shapes: HSI 144 + LiDAR 1 bands, 15 classes).
VIT_B16 = [("lora", {}, "lora_rank", 310, 6_456_591), ("moe_lora", {}, "adapter_rank", 309, 6_447_375),
           ("mmp", {}, "prompt_length", 206, 6_438_159),
           ("dcp", {"dcp_variant": "release"}, "prompt_length", 30, 6_450_159)]


@pytest.mark.parametrize("method, updates, key, value, parameters", VIT_B16)
def test_matched_budget_on_vit_b16_houston_shapes(method, updates, key, value, parameters):
    cfg = defaults("remote", vit="ViT-B/16", clip_random_init=True, method=method, budget="matched", **updates)
    _, chosen = settled(cfg, [houston_info()])
    assert chosen.capacity["reference_parameters"] == 6_449_723  # MaMOL's count at the paper's sizes
    assert (chosen.capacity["key"], chosen.capacity["value"], chosen.capacity["parameters"]) == (key, value, parameters)
    assert abs(share(chosen, chosen.capacity)) <= TOLERANCE


def test_reference_dcp_and_mamol_at_lora_budget_are_refused_on_vit_b16_with_the_numbers():
    info = [houston_info()]
    cfg = defaults("remote", vit="ViT-B/16", clip_random_init=True, method="dcp", budget="matched")
    with pytest.raises(ConfigError, match=r"method=dcp cannot come within 5% of mamol's.*prompt_length=3, trains "
                                          r"8,327,919 against mamol's 6,449,723"):
        settled(cfg, info)
    cfg = defaults("remote", vit="ViT-B/16", clip_random_init=True, budget="lora")
    with pytest.raises(ConfigError, match=r"method=mamol .* of lora's .*adapter_rank=1, trains 6,127,163 against "
                                          r"lora's 890,127"):
        settled(cfg, info)


def test_lora_budget_scales_mamol_down_to_loras_count():
    """Where LoRA's updates outweigh MaMOL's fixed parts (every target of the tiny backbone), MaMOL's rank drops
    until its share is LoRA's; at the paper's sizes the refusal says why."""
    info = remote_info()
    targets = ["q", "k", "v", "o", "mlp"]
    _, chosen = settled(tiny_config(budget="lora", lora_targets=targets), [info])
    lora = trainable_parameters(tiny_model(info, method="lora", lora_targets=targets))
    assert chosen.capacity["reference"] == "lora" and chosen.capacity["reference_parameters"] == lora
    assert chosen.options.adapter_rank < 8 and abs(share(chosen, chosen.capacity)) <= TOLERANCE
    assert trainable_parameters(tiny_model(info, budget="lora", lora_targets=targets)) == chosen.capacity["parameters"]
    with pytest.raises(ConfigError, match="budget='lora': method=mamol cannot come within 5% of lora's"):
        settled(tiny_config(budget="lora"), [info])


def test_linear_probe_is_refused_under_a_budget_and_an_unsettled_budget_is_not_built():
    info = remote_info()
    for budget in ("matched", "lora"):
        with pytest.raises(ConfigError, match=f"budget='{budget}': method=linear_probe has no capacity key"):
            settled(tiny_config(method="linear_probe", budget=budget), [info])
    cfg = tiny_config(method="lora", budget="matched")
    with pytest.raises(ConfigError, match="settled on the data's shapes before the model is built"):
        build_model(*resolve_model(cfg, "remote", method_class("lora").Options), [info])
    with pytest.raises(ConfigError, match="budget='fair'"):
        resolve_model(tiny_config(budget="fair"), "remote", method_class("lora").Options)


def test_a_run_records_the_chosen_capacity_and_budget(remote_root, tmp_path):
    report = run_experiment("remote", **short_run(remote_root, tmp_path, method="lora", budget="matched", max_steps=1))
    config = json.loads((Path(report["run_dir"]) / "config.json").read_text())
    for record in (config["settings"]["method"], report["settings"]["method"]):
        assert record["budget"] == "matched"
        assert record["capacity"]["key"] == "lora_rank"
        assert record["options"]["lora_rank"] == record["capacity"]["value"]
    assert report["settings"]["method"]["capacity"]["parameters"] == report["trainable_parameters"]
    assert report["settings"]["method"]["capacity"]["value"] > 8  # scaled up from LoRA's rank 8 towards MaMOL
