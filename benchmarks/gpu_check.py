"""The checks that need a GPU, in one run with one summary table: ``python benchmarks/gpu_check.py``.

    python benchmarks/gpu_check.py [--out DIR] [--steps N] [--batch B]
    python benchmarks/gpu_check.py --smoke        # the same steps on the CPU, tiny CLIP, small scene

Steps, each in its own process (a failure is reported in the table and the next step still runs):

1. ``cuda tests``: the test subset marked ``cuda`` (``pytest -m cuda``: a training step of every method under
   fp16 and bf16 autocast on the GPU);
2. ``step <precision>``: a ViT-B/16 MaMOL training step (random weights, Houston shapes, missing 0.7 / both,
   as ``python -m mamol.bench``) in fp32, fp16 mixed (with a gradient scaler, as Lightning's ``16-mixed``)
   and bf16 mixed: samples per second and peak GPU memory; first one forward under
   ``torch.cuda.set_sync_debug_mode("error")`` (without skipping missing rows, whose counts are the one host
   read a forward needs), so a host-device synchronisation in the forward fails the step;
3. ``ddp``: ``run.py`` over every visible GPU (``num_gpus=<count>``) on a small synthetic scene; skipped with
   one GPU (the two-process CPU test in ``tests/train/test_processes.py`` covers the DDP logic);
4. ``houston run``: a Houston-sized synthetic scene (349 × 1905, 144 HSI bands + LiDAR) generated, converted
   with ``datasets/make_arrow.py`` and trained for a few epochs with ViT-B/16 in fp16 through ``run.py``, then
   tested: wall time of each part and the test OA.

``--smoke`` runs the same steps on the CPU with the tiny backbone (fp32 and bf16, a small scene) so the
script itself is tested without a GPU (``tests/test_gpu_check.py``). Needs the project's packages; on a
machine without sacred / open_clip, install them from wheels first (README, "Benchmarks").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STEP = """
import json, sys, time
import torch
sys.path.insert(0, {repo!r})
from mamol.bench import make_batch, remote_model, sync, train_step_fn

vit, precision, batch_size, steps, device = {vit!r}, {precision!r}, {batch!r}, {steps!r}, torch.device({device!r})
torch.manual_seed(0)
model = remote_model(vit).to(device)
dtype = {{"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}}[precision]
data = make_batch(batch_size, device)
step = train_step_fn(model, data, dtype)  # fp16 with a GradScaler, as 16-mixed
for _ in range(2):
    step()
sync(device)
if device.type == "cuda":
    # The forward reads nothing on the host (a sync stalls the GPU) but the counts of present rows that size the
    # encoder batch when missing rows are skipped (mamol.missing.present_rows): checked without skipping.
    model.skip_missing = False
    torch.cuda.set_sync_debug_mode("error")
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        model(data)
    torch.cuda.set_sync_debug_mode(0)
    model.skip_missing = True
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
start = time.perf_counter()
for _ in range(steps):
    loss = step()
sync(device)
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
print(json.dumps({{"samples_per_s": batch_size * steps / seconds, "step_ms": 1e3 * seconds / steps,
                  "peak_mib": peak, "loss": float(loss)}}))
"""


def run(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 1800) -> tuple[bool, float, str]:
    """Run ``cmd`` in the repository root, output to ``log``; (succeeded, seconds, last line of its output)."""
    shown = [c if len(c) < 200 else c[:60].replace("\n", " ") + "..." for c in cmd]
    print("$ " + " ".join(shown), flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as err:
        log.write_text(f"timed out after {timeout:.0f} s\n{err.stdout or ''}{err.stderr or ''}")
        return False, time.perf_counter() - start, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    log.write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if done.returncode != 0:
        last = f"exit status {done.returncode}: " + ((errors or lines or [""])[-1])
    return done.returncode == 0, seconds, last


def latest_results(runs: Path, exp_name: str) -> dict:
    versions = sorted((runs / exp_name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return json.loads((versions[-1] / "test_results.json").read_text())


def test_oa(results: dict) -> str:
    metrics = results.get("metrics", results)
    found = [v for k, v in metrics.items() if k.endswith("OA") and isinstance(v, (int, float))]
    return f"test OA {found[0]:.2f}" if found else "test metrics: " + json.dumps(metrics)[:80]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for scenes, runs and logs (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    parser.add_argument("--batch", type=int, default=128, help="batch size of the step benchmark (per GPU)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the Houston-sized run")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny CLIP, small scene: checks the script")
    args = parser.parse_args(argv)

    py = sys.executable
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        device, vit, precisions, gpus, steps, batch = "cpu", "tiny", ("fp32", "bf16"), 0, 2, 8
    else:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA device is visible (torch.cuda.is_available() is False); "
                  "--smoke runs the same steps on the CPU", file=sys.stderr)
            return 2
        device, vit, precisions, gpus = "cuda", "ViT-B/16", ("fp32", "fp16", "bf16"), torch.cuda.device_count()
        steps, batch = args.steps, args.batch
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s): {names}", flush=True)

    out = args.out or Path(tempfile.mkdtemp(prefix="mamol-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    rows: list[tuple[str, str, str]] = []  # (check, result, figures)

    def record(name: str, ok: bool, seconds: float, figures: str) -> None:
        rows.append((name, ("ok" if ok else "FAILED") + f" ({seconds:.0f} s)", figures))
        print(f"-> {name}: {rows[-1][1]} {figures}", flush=True)

    # 1. the CUDA test subset
    ok, seconds, last = run([py, "-m", "pytest", "-q", "-m", "cuda", "tests"], logs / "cuda_tests.log", env)
    record("cuda tests", ok, seconds, last)

    # 2. the training step per precision
    for precision in precisions:
        code = STEP.format(repo=str(REPO), vit=vit, precision=precision, batch=batch, steps=steps, device=device)
        ok, seconds, last = run([py, "-c", code], logs / f"step_{precision}.log", env)
        if ok:
            r = json.loads(last)
            peak = "n/a on the CPU" if r["peak_mib"] != r["peak_mib"] else f"{r['peak_mib']:.0f} MiB"
            last = (f"{r['samples_per_s']:.1f} samples/s ({r['step_ms']:.0f} ms/step, batch {batch}), "
                    f"peak memory {peak}, loss {r['loss']:.3f}")
        record(f"step {vit} {precision}", ok, seconds, last)

    # a synthetic scene: small for the DDP check (and the smoke run), Houston-sized for the timed run
    small, houston = out / "small", out / "houston"
    ok, seconds, last = run([py, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                             "from mamol.data.synthetic import make_synthetic_scene as m; "
                             "m(sys.argv[1], height=60, width=80, hsi_bands=16, n_classes=5, seed=0)",
                             str(small / "scene"), str(REPO)], logs / "small_scene.log", env)
    if ok:
        ok, seconds2, last = run([py, "datasets/make_arrow.py", "--dataset", "synthetic", "--root",
                                  str(small / "scene"), "--target", str(small / "arrow"), "--train-per-class", "40",
                                  "--val-per-class", "20", "--test-per-class", "40"], logs / "small_arrow.log", env)
        seconds += seconds2
    record("small scene", ok, seconds, "60 x 80, 16 HSI bands + LiDAR, 5 classes")

    common = ["remote", f"vit={vit}", "clip_random_init=True", "num_workers=2",
              f"log_dir={out / 'runs'}", f"missing_table_root={out / 'missing_tables'}"]
    # 3. DDP over the visible GPUs
    if gpus >= 2:
        ok, seconds, last = run([py, "run.py", "with", *common, f"data_root={small / 'arrow'}", f"num_gpus={gpus}",
                                 "precision=16", "max_epoch=2", "per_gpu_batchsize=32", f"batch_size={32 * gpus}",
                                 "check_val_every_n_epoch=1", "exp_name=gpu_ddp"], logs / "ddp.log", env)
        record(f"ddp {gpus} GPUs", ok, seconds, test_oa(latest_results(out / "runs", "gpu_ddp")) if ok else last)
    else:
        rows.append((f"ddp {gpus} GPU(s)", "skipped",
                     "needs 2 or more GPUs (DDP logic: tests/train/test_processes.py)"))

    # 4. a timed short run: the Houston-sized scene in the smoke run is the small one
    if args.smoke:
        scene_arrow, dataset, sized = small / "arrow", "synthetic", "small"
        run_args = ["num_gpus=0", "precision=bf16", "per_gpu_batchsize=16", "batch_size=16", "max_epoch=1"]
    else:
        ok, seconds, last = run([py, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                                 "from mamol.data.synthetic import make_houston_sized; "
                                 "make_houston_sized(sys.argv[1], seed=0)", str(houston / "scene"), str(REPO)],
                                logs / "houston_scene.log", env)
        record("houston scene", ok, seconds, "349 x 1905, 144 HSI bands + LiDAR, 15 classes")
        ok, seconds, last = run([py, "datasets/make_arrow.py", "--dataset", "houston2013", "--root",
                                 str(houston / "scene"), "--target", str(houston / "arrow")],
                                logs / "houston_arrow.log", env)
        record("houston make_arrow", ok, seconds, "100 / 50 / 300 samples per class")
        scene_arrow, dataset, sized = houston / "arrow", "houston2013", "Houston-sized"
        run_args = ["num_gpus=1", "precision=16", "per_gpu_batchsize=128", "batch_size=128",
                    f"max_epoch={args.epochs}"]
    ok, seconds, last = run([py, "run.py", "with", *common, f"data_root={scene_arrow}", f"datasets=['{dataset}']",
                             *run_args, "check_val_every_n_epoch=1", "exp_name=gpu_run"], logs / "run.log", env)
    record(f"{sized} run ({vit})", ok, seconds, test_oa(latest_results(out / "runs", "gpu_run")) if ok else last)

    width = max(len(r[0]) for r in rows)
    print(f"\nSummary ({'smoke run on the CPU' if args.smoke else device}; logs in {logs})")
    print("| check | result | figures |")
    print("|---|---|---|")
    for name, result, figures in rows:
        print(f"| {name:<{width}} | {result} | {figures} |")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0 if all(not r[1].startswith("FAILED") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
