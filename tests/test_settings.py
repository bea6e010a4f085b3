"""Config validation and the learning-rate schedule."""
import pytest

from mamol.settings import ConfigError, hardware, lr_lambda, resolve


def _cfg(tmp_path, **kw):
    base = dict(datasets=["scene"], data_root=str(tmp_path), batch_size=128, per_gpu_batchsize=32, num_gpus=0,
                num_nodes=1, precision=16, missing_ratio={"train": 0.7, "val": 0.7, "test": 0.7},
                missing_type={"train": "both", "val": "both", "test": "both"}, both_ratio=0.5, top_k=1,
                num_dynamic_experts=2, optim_type="adamw", warmup_steps=0.1, decay_power=1, loss_names={})
    base.update(kw)
    return base


def test_accumulation_from_batch_sizes(tmp_path):
    hw = resolve(_cfg(tmp_path))["_derived"]
    assert hw["accumulate"] == 4 and hw["per_device_batch"] == 32 and hw["accelerator"] == "cpu"


def test_accumulation_guard_names_the_keys(tmp_path):
    with pytest.raises(ConfigError, match="batch_size.*per_gpu_batchsize"):
        resolve(_cfg(tmp_path, batch_size=16, per_gpu_batchsize=32))


def test_cpu_never_gets_half_precision(tmp_path):
    assert hardware(_cfg(tmp_path, precision=16))["precision"] == "32-true"
    assert hardware(_cfg(tmp_path, precision="bf16"))["precision"] == "32-true"


def test_bad_values_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match="data_root"):
        resolve(_cfg(tmp_path, data_root=""))
    with pytest.raises(ConfigError, match="missing_ratio\\['train'\\]"):
        resolve(_cfg(tmp_path, missing_ratio={"train": 1.5, "val": 0.1, "test": 0.1}))
    with pytest.raises(ConfigError, match="top_k"):
        resolve(_cfg(tmp_path, top_k=3))
    with pytest.raises(ConfigError, match="load_path"):
        resolve(_cfg(tmp_path, test_only=True, load_path=""))
    with pytest.raises(ConfigError, match="max_text_len=1024"):
        resolve(_cfg(tmp_path, datasets=["mmimdb"], loss_names={"mmimdb": 1}, max_text_len=1024))
    with pytest.raises(ConfigError, match="loss_names\\['mmimdb'\\]"):
        resolve(_cfg(tmp_path, datasets=["mmimdb"], loss_names={"remote": 1, "mmimdb": 0}))


def test_scalar_missing_settings_apply_to_every_split(tmp_path):
    cfg = resolve(_cfg(tmp_path, missing_ratio=0.5, missing_type="HS"))
    assert cfg["missing_ratio"] == {"train": 0.5, "val": 0.5, "test": 0.5}
    assert cfg["missing_type"]["test"] == "HS"


def test_warmup_then_linear_decay_to_end():
    factors = [lr_lambda(s, 100, 10, 1, 0.0) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_lambda(100, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
