"""Benchmark: the same sweep of 4 runs trained one after another (``launcher=serial``) and two at a time
(``launcher=local max_parallel=2``), both with ``cpu_threads=1``, on a synthetic scene with the tiny random CLIP.

    python benchmarks/bench_launchers.py [--out DIR] [--epochs 12] [--parallel 2]

Prints each sweep's wall time, their ratio (serial / local: how much sooner the local launcher finishes) and
whether every run's test metrics are identical under the two launchers. On a 2-core machine two 1-thread runs
use both cores where one 1-thread run leaves one idle; a GPU cluster scales the same way with ``launcher=slurm``:
runs are independent, so N jobs at once finish N times sooner, up to the queue.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mamol.conversion.synthetic import make_synthetic_scene

REPO = Path(__file__).resolve().parents[1]


def sweep(common: list[str], exp_name: str, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "run.py"), "sweep", "with", *common, f"exp_name={exp_name}", *extra],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def metrics(folder: Path) -> dict[str, dict]:
    out = {}
    for results in sorted(folder.glob("*/version_*/test_results.json")):
        out[results.parent.parent.name] = json.loads(results.read_text())["metrics"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/launchers"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or pass another --out")
    make_synthetic_scene(out / "scene", height=60, width=80, hsi_bands=16, n_classes=4, seed=0)
    subprocess.run([sys.executable, str(REPO / "datasets" / "make_arrow.py"), "--dataset", "synthetic", "--root",
                    str(out / "scene"), "--target", str(out / "arrow"), "--train-per-class", "60",
                    "--val-per-class", "20", "--test-per-class", "60"], check=True, stdout=subprocess.DEVNULL)
    common = [f"data_root={out / 'arrow'}", "remote", "datasets=['synthetic']", "vit=tiny", "clip_random_init=True",
              "num_gpus=0", "num_workers=0", "batch_size=32", "per_gpu_batchsize=32", f"log_dir={out / 'runs'}",
              f"missing_table_root={out / 'tables'}", "check_val_every_n_epoch=2", "sweep_grid=False",
              "cpu_threads=1"]
    # Missing tables are drawn by the first run that needs them: draw them before timing either launcher.
    sweep([*common, "seeds=[0]", "methods=['lora']", "max_epoch=1"], "warmup")
    timed = [*common, f"max_epoch={args.epochs}", "seeds=[0,1]", "methods=['mamol','lora']"]
    serial = sweep(timed, "serial")
    local = sweep(timed, "local", "launcher=local", f"max_parallel={args.parallel}")
    same = metrics(out / "runs" / "serial") == metrics(out / "runs" / "local")
    runs = len(metrics(out / "runs" / "local"))
    print(f"{runs} runs, {args.epochs} epochs each, cpu_threads=1 per run")
    print(f"serial                    {serial:8.1f} s")
    print(f"local max_parallel={args.parallel}      {local:8.1f} s")
    print(f"speed-up (serial / local) {serial / local:8.2f}x")
    print(f"identical test metrics    {same}")
    return 0 if same and runs == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
