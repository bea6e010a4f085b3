"""Typed settings: resolving the Sacred config, errors that name the key, the learning-rate schedule."""
import dataclasses

import pytest

from config import defaults
from mamol import settings
from mamol.errors import ConfigError
from mamol.methods.mamol import MaMOLOptions
from mamol.methods.options import PAPER
from mamol.missing import MissingSetting
from mamol.optim import lr_lambda
from mamol.settings import coerce, hardware_settings, loader_workers, resolve
from tests.helpers import tiny_config


def _resolve(tmp_path, *named, kind="remote", datasets=("scene",), evaluation=False, **updates):
    cfg = tiny_config(*named, **{"data_root": str(tmp_path), **updates})
    return resolve(cfg, kind=kind, datasets=datasets, method_options=MaMOLOptions, evaluation=evaluation)


def test_accumulation_from_batch_sizes(tmp_path):
    hw = _resolve(tmp_path, batch_size=128, per_gpu_batchsize=32).hardware
    assert hw.accumulate == 4 and hw.per_device_batch == 32 and hw.accelerator == "cpu"


def test_accumulation_guard_names_the_keys(tmp_path):
    with pytest.raises(ConfigError, match="batch_size.*per_gpu_batchsize"):
        _resolve(tmp_path, batch_size=16, per_gpu_batchsize=32)


def test_evaluation_is_never_refused_over_accumulation(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"")  # load_path must exist; it is read later, by the run
    for processes, per_device, batch in ((2, 8, 8), (1, 32, 16), (2, 128, 1)):
        hw = _resolve(tmp_path, test_only=True, load_path=str(tmp_path / "model.ckpt"), num_processes=processes,
                      per_gpu_batchsize=per_device, batch_size=batch).hardware
        assert (hw.devices, hw.per_device_batch, hw.accumulate) == (processes, per_device, 1)
    with pytest.raises(ConfigError, match="gradient accumulation"):  # the same keys still refuse training
        _resolve(tmp_path, num_processes=2, per_gpu_batchsize=8, batch_size=8)
    # evaluate_grid and predict_map evaluate too (they resolve with evaluation=True)
    hw = _resolve(tmp_path, evaluation=True, num_processes=2, per_gpu_batchsize=8, batch_size=8).hardware
    assert (hw.devices, hw.per_device_batch, hw.accumulate) == (2, 8, 1)


def test_loader_workers_share_the_cpus_of_the_node():
    # (processes per node, CPUs) -> workers per process: one CPU left to each process, at most 8 workers
    for processes, cpus, workers in ((1, 16, 8), (2, 16, 7), (8, 16, 1), (1, 2, 1), (2, 2, 0), (1, 1, 0),
                                     (1, 64, 8), (16, 16, 0)):
        assert loader_workers(processes, cpus=cpus) == workers, (processes, cpus)


def test_num_workers_default_comes_from_the_cpu_count(tmp_path, monkeypatch):
    assert defaults()["num_workers"] is None  # not a fixed 2 that starves a 16-core GPU node
    monkeypatch.setattr(settings, "available_cpus", lambda: 16)
    assert _resolve(tmp_path, num_workers=None).data.num_workers == 8
    assert _resolve(tmp_path, num_workers=None, num_processes=2, batch_size=8).data.num_workers == 7
    assert _resolve(tmp_path, num_workers=3).data.num_workers == 3  # a given value is kept


def test_cpu_never_gets_fp16_and_bf16_only_when_asked(tmp_path):
    cfg = tiny_config(batch_size=8, per_gpu_batchsize=8)
    assert hardware_settings(cfg | {"precision": 16}, 8, cuda_devices=0, env={}).precision == "32-true"
    assert hardware_settings(cfg | {"precision": "bf16"}, 8, cuda_devices=0, env={}).precision == "bf16-mixed"
    gpu = hardware_settings(cfg | {"precision": 16, "num_gpus": 1}, 8, cuda_devices=1, env={})
    assert gpu.precision == "16-mixed" and gpu.accelerator == "gpu"


def test_processes_gpus_and_launchers(tmp_path):
    cfg = tiny_config(batch_size=8, per_gpu_batchsize=4)
    cpu2 = hardware_settings(cfg | {"num_processes": 2}, 8, cuda_devices=0, env={})
    assert (cpu2.accelerator, cpu2.devices, cpu2.strategy, cpu2.accumulate) == ("cpu", 2, "ddp", 1)
    with pytest.raises(ConfigError, match="num_gpus=2 but 0 GPUs are available: set num_gpus=0"):
        hardware_settings(cfg | {"num_gpus": 2}, 8, cuda_devices=0, env={})
    with pytest.raises(ConfigError, match="num_gpus=2 but 1 GPU is available"):
        hardware_settings(cfg | {"num_gpus": 2}, 8, cuda_devices=1, env={})
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}
    launched = hardware_settings(cfg | {"num_nodes": 1}, 16, cuda_devices=0, env=torchrun)
    assert (launched.devices, launched.num_nodes, launched.strategy) == (2, 2, "ddp")
    slurm = {"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train"}
    srun = hardware_settings(cfg, 16, cuda_devices=0, env=slurm)
    assert (srun.devices, srun.num_nodes, srun.strategy, srun.accumulate) == (2, 2, "ddp", 1)
    assert hardware_settings(cfg, 8, cuda_devices=0, env={"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "bash"}).devices == 1


def test_bad_values_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match="data_root"):
        _resolve(tmp_path, data_root="")
    with pytest.raises(ConfigError, match="missing_ratio\\['train'\\]"):
        _resolve(tmp_path, missing_ratio={"train": 1.5, "val": 0.1, "test": 0.1})
    with pytest.raises(ConfigError, match="top_k"):
        _resolve(tmp_path, top_k=3)
    with pytest.raises(ConfigError, match="load_path"):
        _resolve(tmp_path, test_only=True, load_path="")
    with pytest.raises(ConfigError, match="max_text_len=1024"):
        _resolve(tmp_path, kind="natural", datasets=("mmimdb",), loss_names={"mmimdb": 1}, max_text_len=1024)
    with pytest.raises(ConfigError, match="loss_names\\['mmimdb'\\]"):
        _resolve(tmp_path, kind="natural", datasets=("mmimdb",), loss_names={"remote": 1, "mmimdb": 0})


@pytest.mark.parametrize("key,value,expected", [
    ("learning_rate", "1e-3", "learning_rate='1e-3': expected a number, found str"),
    ("max_epoch", 2.5, "max_epoch=2.5: expected an integer"),
    ("skip_missing", "yes", "skip_missing='yes': expected True/False"),
    ("adapter_layers", 6, "adapter_layers=6: expected a list of an integer or None"),
    ("missing_fill", "twos", "missing_fill='twos': expected 'ones' or 'zeros'"),
    ("decay_power", "linear", "decay_power='linear': expected a number or 'cosine'"),
    ("num_workers", -1, "num_workers must be >= 0"),
])
def test_ill_typed_values_name_their_key(tmp_path, key, value, expected):
    with pytest.raises(ConfigError) as err:
        _resolve(tmp_path, **{key: value})
    assert expected in str(err.value)


def test_scalar_missing_settings_apply_to_every_split(tmp_path):
    missing = _resolve(tmp_path, missing_ratio=0.5, missing_type="HS").missing
    assert missing.train == missing.val == missing.test == MissingSetting(0.5, "HS", 0.5, 0.0, 0)


def test_test_overrides_and_ratio_zero(tmp_path):
    missing = _resolve(tmp_path, test_ratio=1.0, test_type="lidar").missing
    assert missing.train == MissingSetting(0.7, "both", 0.5, 0.0, 0)
    assert missing.val == missing.test == MissingSetting(1.0, "lidar", 0.5, 0.0, 0)
    assert _resolve(tmp_path, test_ratio=0.0).missing.test.type == "none"  # nothing goes missing


def test_paper_defaults_per_data_kind(tmp_path):
    remote = _resolve(tmp_path, "remote").method.options
    natural = _resolve(tmp_path, "task_finetune_mmimdb", kind="natural", datasets=("mmimdb",)).method.options
    for options, kind in ((remote, "remote"), (natural, "natural")):
        assert {k: getattr(options, k) for k in PAPER[kind]} == PAPER[kind]
    assert (remote.adapter_rank, natural.adapter_rank, natural.adapter_scale) == (8, 16, 0.2)
    assert _resolve(tmp_path, adapter_rank=4).method.options.adapter_rank == 4  # an explicit value wins


def test_natural_named_configs_clip_gradients_like_the_release(tmp_path):
    for name, task in (("task_finetune_mmimdb", "mmimdb"), ("task_finetune_food101", "food101"),
                       ("task_finetune_hatememes", "hatememes")):
        s = _resolve(tmp_path, name, kind="natural", datasets=(task,))
        assert s.optim.grad_clip == 1.0 and s.optim.learning_rate == 1e-2 and s.data.loss_weights == {task: 1.0}


def test_settings_are_frozen_and_serialisable(tmp_path):
    s = _resolve(tmp_path, "remote")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.optim.learning_rate = 1.0  # type: ignore[misc]
    flat = s.to_dict()
    assert flat["data"]["root"] == str(tmp_path) and flat["method"]["options"]["adapter_rank"] == 8


def test_coerce_accepts_command_line_forms():
    assert coerce("k", 3, float) == 3.0 and coerce("k", [1, 2], tuple[int, ...]) == (1, 2)
    assert coerce("k", None, int | None) is None and coerce("k", 2.0, int) == 2


def test_warmup_then_linear_decay_to_end():
    factors = [lr_lambda(s, 100, 10, 1, 0.0) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_lambda(100, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
