"""The Sacred experiment: every key has one default and a meaning, gathered from where each fact lives.

Root keys are written in :mod:`mamol.experiment`; a method's keys come from its ``Options`` dataclass, an
image–text dataset's head size and fine-tuning cadence from its catalogue entry. ``print_config`` shows
every key with its meaning.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import pytest

from mamol.data.catalogue import natural_entries
from mamol.experiment import defaults, ex, root_config
from mamol.methods import METHODS
from mamol.methods.options import ExpertOptions, PromptOptions, config_keys, key


def test_print_config_shows_every_key_with_its_meaning(capsys):
    import run

    assert run.command_line(["run.py", "print_config", "with", "task_finetune_mmimdb"]) == 0
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # without Sacred's colours
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^  (\w+)(?: = .*?|:)\s*(#.*)?$", shown, re.MULTILINE)}
    assert set(root_config()) <= set(lines)
    assert [k for k in root_config() if not lines[k]] == []  # each key carries its meaning
    assert "# LoRA rank r of every expert" in shown and "mmimdb_class_num = 23" in shown


def test_method_keys_come_from_their_options():
    cfg = root_config()
    for cls in METHODS.values():
        for f in dataclasses.fields(cls.Options):
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            assert cfg[f.name] == default, (cls.name, f.name)
    # shared groups are declared once and read by several methods
    assert issubclass(METHODS["mamol"].Options, ExpertOptions) and issubclass(METHODS["moe_lora"].Options,
                                                                                ExpertOptions)
    assert issubclass(METHODS["mmp"].Options, PromptOptions) and issubclass(METHODS["dcp"].Options, PromptOptions)


def test_a_new_method_is_its_options_and_nothing_else():
    @dataclass(frozen=True)
    class ToyOptions(ExpertOptions):
        toy_strength: float = key(0.5, "toy: how strong")

    defaults_, docs = config_keys([*(c.Options for c in METHODS.values()), ToyOptions])
    assert defaults_["toy_strength"] == 0.5 and docs["toy_strength"] == "toy: how strong"
    assert defaults_["adapter_rank"] is None  # inherited, not redeclared

    @dataclass(frozen=True)
    class Clash(ExpertOptions):
        top_k: int = key(3, "another default for a shared key")

    with pytest.raises(TypeError, match="config key 'top_k' has default None .* but 3 in Clash"):
        config_keys([METHODS["mamol"].Options, Clash])

    @dataclass(frozen=True)
    class NoDefault:
        rank: int

    with pytest.raises(TypeError, match="NoDefault.rank has no default"):
        config_keys([NoDefault])


def test_dataset_keys_and_named_configs_come_from_the_catalogue():
    cfg = root_config()
    for entry in natural_entries():
        assert cfg[f"{entry.name}_class_num"] == entry.class_num
        assert cfg["loss_names"][entry.name] == 0
        finetune = defaults(f"task_finetune_{entry.name}")
        assert finetune["datasets"] == [entry.name] and finetune["loss_names"][entry.name] == 1
        assert finetune["val_check_interval"] == entry.val_check_interval
    assert {e.name: e.class_num for e in natural_entries()} == {"mmimdb": 23, "food101": 101, "hatememes": 2}
    assert defaults("task_finetune_hatememes")["val_check_interval"] == 0.11  # DCP's cadence for that task


def test_named_configs_only_set_keys():
    assert defaults("remote")["check_val_every_n_epoch"] == 20  # the release validates every 20 epochs
    assert defaults()["check_val_every_n_epoch"] == 1
    for name in ex.named_configs:
        assert set(defaults(name)) == set(root_config()), name
