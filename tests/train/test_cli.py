"""The entry points on bad input: one line ``error: ...``, exit status 2, no traceback, nothing left behind."""
from __future__ import annotations

import shutil

import pytest

import run
from tests.fakes.remote import small_scene_dir
from tests.helpers import TINY, cli, cli_updates, make_arrow_script, short_run


def _error_line(returncode: int, stderr: str, alone: bool = True) -> str:
    """The error line; ``alone``: the only line on stderr (else: the last one, after the run's own output)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    assert not alone or len(lines) == 1, stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1 and "Traceback" not in stderr
    return lines[-1]


def _base(root, tmp_path, **updates) -> dict:
    return {**TINY, **short_run(root, tmp_path, **updates)}


def test_run_py_bad_inputs_are_one_line(remote_root, tmp_path, capfd):
    base = _base(remote_root, tmp_path)
    proc = cli("with", "remote", *cli_updates(base), "learning_rte=1e-3")  # once through a real process
    line = _error_line(proc.returncode, proc.stderr)
    assert "unknown config key 'learning_rte'; did you mean 'learning_rate'?" in line and not proc.stdout
    cases = {  # the same entry point in this process, for speed
        "remot": "unknown named config 'remot'; did you mean 'remote'?",
        "learning_rate=abc": "learning_rate='abc': expected a number, found str",
        f"load_path={tmp_path / 'absent.ckpt'}": "absent.ckpt",
        "num_gpus=3": "num_gpus=3 but 0 GPUs are available",
        "datasets=['nosuchscene']": "no Arrow data for dataset 'nosuchscene'",
    }
    for word, expected in cases.items():
        key = word.split("=", 1)[0]
        args = cli_updates({k: v for k, v in base.items() if k != key})
        capfd.readouterr()
        status = run.command_line(["run.py", "with", "remote", *args, word])
        assert expected in _error_line(status, capfd.readouterr().err), word
    assert not (tmp_path / "runs").exists()  # nothing of a failed run is left


def test_failed_run_removes_its_folder_and_debug_shows_the_traceback(remote_root, tmp_path, capfd):
    broken = tmp_path / "broken"
    shutil.copytree(remote_root, broken)
    data = (broken / "synthetic_val.arrow").read_bytes()
    (broken / "synthetic_val.arrow").write_bytes(data[: len(data) // 2])  # refused before the run folder exists
    args = cli_updates(_base(broken, tmp_path, max_epoch=1))
    status = run.command_line(["run.py", "with", "remote", *args])
    line = _error_line(status, capfd.readouterr().err, alone=False)  # after Lightning's start-up lines
    assert "synthetic_val.arrow" in line and "truncated or corrupt" in line
    runs = tmp_path / "runs" / "mamol"
    assert not runs.exists() or list(runs.iterdir()) == []  # no run folder left behind
    with pytest.raises(SystemExit):  # debug=True: Sacred prints the traceback and exits
        run.command_line(["run.py", "with", "remote", *args, "debug=True"])
    err = capfd.readouterr().err
    assert "Traceback" in err and "ArrowFileError: " in err


def test_make_arrow_bad_inputs_are_one_line(tmp_path, capfd):
    proc = cli("--dataset", "scene", "--root", str(tmp_path / "absent"), "--target", str(tmp_path / "out"),
               script="datasets/make_arrow.py")
    assert "scene folder" in _error_line(proc.returncode, proc.stderr) and "absent" in proc.stderr
    root, _ = small_scene_dir(tmp_path)
    argv = ["--dataset", "scene", "--root", str(root), "--target", str(tmp_path / "out"), "-q",
            "--train-per-class", "1000"]
    status = make_arrow_script().main(argv)
    assert "fewer than requested" in _error_line(status, capfd.readouterr().err)
    assert not list((tmp_path / "out").glob("*"))  # nothing written (globbing an absent folder finds nothing)
    with pytest.raises(ValueError, match="fewer than requested"):
        make_arrow_script().main([*argv, "--debug"])


def test_run_py_without_clip_weights_offline_is_one_line(remote_root, tmp_path):
    """The default backbone (ViT-B/16, OpenAI weights) with an empty cache and no network: one line, exit 2."""
    home = tmp_path / "home"
    home.mkdir()
    updates = {k: v for k, v in _base(remote_root, tmp_path).items() if k not in ("vit", "clip_random_init")}
    proc = cli("with", "remote", *cli_updates({**updates, "vit": "ViT-B/16"}),
               env={"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
                    "XDG_CACHE_HOME": str(home / "cache")})
    line = _error_line(proc.returncode, proc.stderr)
    assert "clip_weights" in line and "network access" in line and "clip_random_init=True" in line, line
    assert not (tmp_path / "runs").exists()
