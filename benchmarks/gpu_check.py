"""The checks that need a GPU, in one run with one summary table: ``python benchmarks/gpu_check.py``.

    python benchmarks/gpu_check.py [--out DIR] [--steps N] [--batch B]
    python benchmarks/gpu_check.py --budget 600   # the essentials within 600 s, with a paper-run estimate
    python benchmarks/gpu_check.py --smoke        # every step on the CPU, tiny CLIP, small scene

Steps, each in its own process (a failure is reported in the table and the next step still runs):

1. ``cuda tests``: the test subset marked ``cuda`` (``pytest -m cuda``: a training step of every method under
   fp16 and bf16 autocast on the GPU); not in the budget mode;
2. ``step <precision>``: a ViT-B/16 MaMOL training step (random weights, Houston shapes, missing 0.7 / both,
   as ``python -m mamol.bench``) in fp32 (not in the budget mode), fp16 mixed (with a gradient scaler, as
   Lightning's ``16-mixed``) and bf16 mixed: step time, samples per second and peak GPU memory;
3. ``zero-sync``: one training forward under ``torch.cuda.set_sync_debug_mode("error")``, which fails on any
   host-device synchronisation. If the package provides ``mamol.bench.zero_sync_check(model, batch, dtype)``
   (:data:`ZERO_SYNC_HOOK`: the forward step's own check) that is used instead of the plain forward here;
4. ``ddp``: ``run.py`` over every visible GPU (``num_gpus=<count>``) on a small synthetic scene; skipped with
   one GPU; in the smoke run, two CPU processes (``num_gpus=0 num_processes=2``);
5. ``houston run``: a Houston-sized synthetic scene (349 × 1905, 144 HSI bands + LiDAR) generated, converted
   with ``datasets/make_arrow.py`` and trained with ViT-B/16 in fp16 through ``run.py``, then tested: wall
   time of each part and the test OA (the budget mode: one epoch, 10 % of the test split).

The table is printed and written to ``<out>/summary.md`` (and ``summary.json``). ``--budget SECONDS`` keeps
the whole check, install included (``GPU_CHECK_INSTALL_S``, set by ``gpu_check.sh``), within that time: each
step gets what is left, and the table ends with the estimated time of a full paper run from the measured
fp16 step time (:func:`paper_run_estimate`, docs/gpu.md). ``--smoke`` runs every step on the CPU with the
tiny backbone (fp32 and bf16, a small scene) so the script itself is tested without a GPU
(``tests/test_gpu_check.py``). On a machine without the project's packages, ``benchmarks/gpu_check.sh``
installs them from wheels fetched beforehand (docs/gpu.md).
"""
from __future__ import annotations

import argparse
import json
import math
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
warmup = {warmup!r}
torch.manual_seed(0)
model = remote_model(vit).to(device)
dtype = {{"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}}[precision]
data = make_batch(batch_size, device)
step = train_step_fn(model, data, dtype)  # fp16 with a GradScaler, as 16-mixed
for _ in range(warmup):
    step()
sync(device)
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


ZERO_SYNC_HOOK = "mamol.bench.zero_sync_check"
"""The forward step's own zero-sync check, ``(model, batch, dtype) -> str`` (what passed), raising on a
host-device synchronisation; the ``zero-sync`` step uses it when the package defines it."""

ZERO_SYNC = """
import json, sys
import torch
sys.path.insert(0, {repo!r})
from mamol import bench
from mamol.bench import make_batch, remote_model

vit, batch_size, device = {vit!r}, {batch!r}, torch.device({device!r})
dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
torch.manual_seed(0)
model, batch = remote_model(vit).to(device), make_batch(batch_size, device)
hook = getattr(bench, {hook_name!r}.rsplit(".", 1)[1], None)
with torch.autocast(device.type, dtype=dtype):
    model(batch)  # warm-up: first calls may initialise lazily (and synchronise)
    if hook is not None:
        result = "hook: " + str(hook(model, batch, dtype))
    elif device.type == "cuda":
        # The forward reads nothing on the host but the counts of present rows that size the encoder batch when
        # missing rows are skipped (mamol.missing.present_rows): checked without skipping.
        model.skip_missing = False
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any synchronisation in the forward raises
        try:
            model(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        result = "no host-device sync in a training forward (skip_missing off)"
    else:
        model(batch)
        result = "forward ran; sync detection needs CUDA"
print(json.dumps({{"result": result}}))
"""

# A full paper run: Houston2013, 201 epochs, batch 128; per class 100 train / 50 val / 300 test pixels (15
# classes; Water has fewer test pixels, ignored here); the remote config validates every 20 epochs.
PAPER = {"epochs": 201, "batch": 128, "train": 15 * 100, "val": 15 * 50, "test": 15 * 300, "val_every": 20}
EVAL_FRACTION = 1 / 3
"""An evaluation batch (forward only) costs about a third of a training step (forward, backward, update)."""


def paper_run_estimate(step_s: float, epochs: int = PAPER["epochs"], batch: int = PAPER["batch"],
                       train: int = PAPER["train"], val: int = PAPER["val"], test: int = PAPER["test"],
                       val_every: int = PAPER["val_every"]) -> dict[str, float]:
    """Seconds of a full run on one GPU from the measured training step time ``step_s`` at batch ``batch``.

    steps = epochs x ceil(train / batch); evaluation batches = (epochs // val_every) x ceil(val / batch)
    + ceil(test / batch), each ``EVAL_FRACTION`` of a step. Start-up, data-loading stalls and checkpoint
    writes are not included.
    """
    steps = epochs * math.ceil(train / batch)
    evals = (epochs // val_every) * math.ceil(val / batch) + math.ceil(test / batch)
    return {"steps": steps, "eval_batches": evals, "train_s": steps * step_s,
            "total_s": steps * step_s + evals * step_s * EVAL_FRACTION}


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
    parser.add_argument("--budget", type=float, help="seconds for everything, install included: the essentials only")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny CLIP, small scene: checks the script")
    args = parser.parse_args(argv)

    started = time.monotonic() - float(os.environ.get("GPU_CHECK_INSTALL_S", "0"))
    py = sys.executable
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        device, vit, precisions, gpus, steps, batch = "cpu", "tiny", ("fp32", "bf16"), 0, 1, 4
    else:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA device is visible (torch.cuda.is_available() is False); "
                  "--smoke runs the same steps on the CPU", file=sys.stderr)
            return 2
        device, vit, gpus = "cuda", "ViT-B/16", torch.cuda.device_count()
        precisions = ("fp16", "bf16") if args.budget else ("fp32", "fp16", "bf16")
        steps, batch = (min(args.steps, 10) if args.budget else args.steps), args.batch
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s): {names}", flush=True)

    def left(cap: float = 1800) -> float:
        """Seconds the next step may take: ``cap``, or what is left of the budget (30 s kept for the table)."""
        return cap if args.budget is None else max(5.0, min(cap, args.budget - 30 - (time.monotonic() - started)))

    out = args.out or Path(tempfile.mkdtemp(prefix="mamol-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    rows: list[tuple[str, str, str]] = []  # (check, result, figures)
    step_ms: dict[str, float] = {}

    def record(name: str, ok: bool, seconds: float, figures: str) -> None:
        rows.append((name, ("ok" if ok else "FAILED") + f" ({seconds:.0f} s)", figures))
        print(f"-> {name}: {rows[-1][1]} {figures}", flush=True)

    # 1. the CUDA test subset (the smoke run: the same files, where they skip without a GPU)
    if not args.budget:
        ok, seconds, last = run([py, "-m", "pytest", "-q", "-m", "cuda", "tests/methods/test_precision.py"],
                                logs / "cuda_tests.log", env, timeout=left())
        record("cuda tests", ok, seconds, last)

    # 2. the training step per precision
    for precision in precisions:
        code = STEP.format(repo=str(REPO), vit=vit, precision=precision, batch=batch, steps=steps, device=device,
                           warmup=1 if args.smoke else 2)
        ok, seconds, last = run([py, "-c", code], logs / f"step_{precision}.log", env, timeout=left(600))
        if ok:
            r = json.loads(last)
            step_ms[precision] = r["step_ms"]
            peak = "n/a on the CPU" if r["peak_mib"] != r["peak_mib"] else f"{r['peak_mib']:.0f} MiB"
            last = (f"{r['samples_per_s']:.1f} samples/s ({r['step_ms']:.0f} ms/step, batch {batch}), "
                    f"peak memory {peak}, loss {r['loss']:.3f}")
        record(f"step {vit} {precision}", ok, seconds, last)

    # 3. no host-device synchronisation in a forward
    code = ZERO_SYNC.format(repo=str(REPO), vit=vit, batch=batch, device=device, hook_name=ZERO_SYNC_HOOK)
    ok, seconds, last = run([py, "-c", code], logs / "zero_sync.log", env, timeout=left(300))
    record("zero-sync forward", ok, seconds, json.loads(last)["result"] if ok else last)

    # a synthetic scene: small for the DDP check (and the smoke run), Houston-sized for the timed run
    small, houston = out / "small", out / "houston"
    per_class = ("8", "4", "8") if args.smoke else ("40", "20", "40")
    ok, seconds, last = run([py, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                             "from mamol.conversion.synthetic import make_synthetic_scene as m; "
                             "m(sys.argv[1], height=60, width=80, hsi_bands=16, n_classes=5, seed=0)",
                             str(small / "scene"), str(REPO)], logs / "small_scene.log", env, timeout=left(300))
    if ok:
        ok, seconds2, last = run([py, "datasets/make_arrow.py", "--dataset", "synthetic", "--root",
                                  str(small / "scene"), "--target", str(small / "arrow"), "--train-per-class",
                                  per_class[0], "--val-per-class", per_class[1], "--test-per-class", per_class[2]],
                                 logs / "small_arrow.log", env, timeout=left(300))
        seconds += seconds2
    record("small scene", ok, seconds, f"60 x 80, 16 HSI bands + LiDAR, 5 classes, {'/'.join(per_class)} per class")

    workers = "num_workers=0" if args.smoke else "num_workers=None"
    common = ["remote", f"vit={vit}", "clip_random_init=True", workers, f"log_dir={out / 'runs'}",
              f"missing_table_root={out / 'missing_tables'}"]
    small_run = [*common, f"data_root={small / 'arrow'}", "datasets=['synthetic']", "check_val_every_n_epoch=1"]
    # 4. DDP: over the visible GPUs, or two CPU processes in the smoke run
    if args.smoke or gpus >= 2:
        devices = ["num_gpus=0", "num_processes=2", "max_epoch=1", "per_gpu_batchsize=8", "batch_size=16"]
        if not args.smoke:
            devices = [f"num_gpus={gpus}", "precision=16", "max_epoch=2", "per_gpu_batchsize=32",
                       f"batch_size={32 * gpus}"]
        ok, seconds, last = run([py, "run.py", "with", *small_run, *devices, "exp_name=gpu_ddp"], logs / "ddp.log",
                                env, timeout=left(900))
        name = "ddp 2 CPU processes" if args.smoke else f"ddp {gpus} GPUs"
        record(name, ok, seconds, test_oa(latest_results(out / "runs", "gpu_ddp")) if ok else last)
    else:
        rows.append((f"ddp {gpus} GPU(s)", "skipped",
                     "needs 2 or more GPUs (DDP logic: tests/train/test_processes.py)"))

    # 5. a timed short run: the Houston-sized scene in the smoke run is the small one
    if args.smoke:
        scene_arrow, dataset, sized = small / "arrow", "synthetic", "small"
        run_args = ["num_gpus=0", "precision=bf16", "per_gpu_batchsize=16", "batch_size=16", "max_epoch=1"]
    else:
        ok, seconds, last = run([py, "-c", "import sys; sys.path.insert(0, sys.argv[2]); "
                                 "from mamol.conversion.synthetic import make_houston_sized; "
                                 "make_houston_sized(sys.argv[1], seed=0)", str(houston / "scene"), str(REPO)],
                                logs / "houston_scene.log", env, timeout=left())
        record("houston scene", ok, seconds, "349 x 1905, 144 HSI bands + LiDAR, 15 classes")
        ok, seconds, last = run([py, "datasets/make_arrow.py", "--dataset", "houston2013", "--root",
                                 str(houston / "scene"), "--target", str(houston / "arrow")],
                                logs / "houston_arrow.log", env, timeout=left())
        record("houston make_arrow", ok, seconds, "100 / 50 / 300 samples per class")
        scene_arrow, dataset, sized = houston / "arrow", "houston2013", "Houston-sized"
        run_args = ["num_gpus=1", "precision=16", "per_gpu_batchsize=128", "batch_size=128",
                    f"max_epoch={1 if args.budget else args.epochs}", *(["limit_test=0.1"] if args.budget else [])]
    ok, seconds, last = run([py, "run.py", "with", *common, f"data_root={scene_arrow}", f"datasets=['{dataset}']",
                             *run_args, "check_val_every_n_epoch=1", "exp_name=gpu_run"], logs / "run.log", env,
                            timeout=left())
    record(f"{sized} run ({vit})", ok, seconds, test_oa(latest_results(out / "runs", "gpu_run")) if ok else last)

    timed = "fp32" if args.smoke else "fp16"  # the paper's precision on the GPU; the CPU has no fp16
    if timed in step_ms:
        e = paper_run_estimate(step_ms[timed] / 1e3 * PAPER["batch"] / batch)  # scaled to batch 128 when smaller
        rows.append(("paper run estimate", "estimate",
                     f"{e['total_s'] / 60:.1f} min on one device: {e['steps']} steps x {step_ms[timed]:.0f} ms "
                     f"(batch {batch}, {vit} {timed}) + {e['eval_batches']} evaluation batches (Houston2013, "
                     f"201 epochs; goal: under 10 min on one H100, docs/gpu.md)"))

    width = max(len(r[0]) for r in rows)
    title = f"Summary ({'smoke run on the CPU' if args.smoke else device}" + (
        f", budget {args.budget:.0f} s, used {time.monotonic() - started:.0f} s" if args.budget else "") + \
        f"; logs in {logs})"
    table = [title, "| check | result | figures |", "|---|---|---|",
             *[f"| {name:<{width}} | {result} | {figures} |" for name, result, figures in rows]]
    print("\n" + "\n".join(table))
    (out / "summary.md").write_text("\n".join(table) + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(f"table written to {out / 'summary.md'}")
    return 0 if all(not r[1].startswith("FAILED") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
