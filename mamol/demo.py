"""The whole method on a laptop CPU in a few minutes: ``python -m mamol.demo --out demo_out``.

1. generates a small synthetic two-modality scene (HSI + LiDAR, complementary classes),
2. converts it with ``datasets/make_arrow.py`` (the command researchers run on real scenes; outside a checkout
   of the repository, ``python -m mamol.convert``),
3. trains MaMOL with ``run.py`` (outside a checkout, ``python -m mamol``) on a tiny, randomly initialised
   CLIP (``vit=tiny clip_random_init=True``),
4. evaluates the best checkpoint over the whole missing-setting grid (``run.py evaluate_grid``: every missing
   type x ratio, ``grid.md`` and ``robustness.png``),
5. draws its classification map of the scene (``run.py predict_map``, complete data),
6. prints one table of OA / AA / kappa under four of the grid's settings.

Every command is printed before it runs, so the demo doubles as a worked example of the real workflow.
``--figures fig`` also copies the robustness plot, the map and the training run's curves into ``fig/`` (``make
figures``: the README's pictures).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mamol.conversion.synthetic import make_synthetic_scene
from mamol.experiments.plots import type_label

REPO = Path(__file__).resolve().parent.parent
"""The repository checkout around the package, when there is one (``run.py`` beside ``mamol/``)."""


def entry_point(script: str, module: str) -> list[str]:
    """The command of an entry point: the checkout's script where there is one, else the package's module."""
    if (REPO / script).is_file() and (REPO / "run.py").is_file():
        return [sys.executable, str(REPO / script)]
    return [sys.executable, "-m", module]

# (label, grid type, ratio): the grid points of the final table, labelled as the figures label them.
SETTINGS = (
    ("complete", "both", 0.0),
    (type_label("hsi"), "hsi", 1.0),
    (type_label("lidar"), "lidar", 1.0),
    (f"{type_label('both')} 0.7", "both", 0.7),
)


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def _latest_run(log_dir: Path, exp_name: str) -> Path:
    return max((log_dir / exp_name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="folder for the scene, Arrow files and runs")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", type=Path, help="copy robustness.png and the map into this folder (fig/)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    scene, arrow, runs = out / "scene", out / "arrow", out / "runs"
    started = time.time()

    print(f"[1/5] generating a synthetic HSI + LiDAR scene in {scene}", flush=True)
    make_synthetic_scene(scene, height=120, width=160, hsi_bands=32, n_classes=6, seed=args.seed)

    print("[2/5] converting it to Arrow", flush=True)
    _run([*entry_point("datasets/make_arrow.py", "mamol.convert"), "--dataset", "synthetic", "--root", str(scene),
          "--target", str(arrow), "--train-per-class", "100", "--val-per-class", "50",
          "--test-per-class", "200", "--seed", str(args.seed)])

    common = [f"data_root={arrow}", "remote", "datasets=['synthetic']", "vit=tiny", "clip_random_init=True",
              "num_gpus=0", "num_workers=0", "batch_size=64", "per_gpu_batchsize=64", f"log_dir={runs}",
              f"missing_table_root={out / 'missing_tables'}", f"seed={args.seed}"]
    print(f"[3/5] training MaMOL for {args.epochs} epochs on the CPU (train missing: 0.7 / both)", flush=True)
    _run([*entry_point("run.py", "mamol"), "with", *common, "exp_name=demo_train", f"max_epoch={args.epochs}",
          "learning_rate=2e-3", "check_val_every_n_epoch=4"])
    trained = json.loads((_latest_run(runs, "demo_train") / "test_results.json").read_text())
    checkpoint = trained["checkpoint"]
    evaluate = [f"load_path={checkpoint}", "per_gpu_batchsize=256", "batch_size=256"]

    print(f"[4/5] evaluating {checkpoint} over every missing type x ratio", flush=True)
    _run([*entry_point("run.py", "mamol"), "evaluate_grid", "with", *common, *evaluate, "exp_name=demo_grid"])
    grid_dir = _latest_run(runs, "demo_grid")
    grid = {(r["type"], r["ratio"]): r["metrics"] for r in json.loads((grid_dir / "grid.json").read_text())["rows"]}
    rows = [(label, *(grid[(kind, ratio)][m] for m in ("OA", "AA", "kappa"))) for label, kind, ratio in SETTINGS]

    print("[5/5] drawing the classification map of the scene (labelled pixels, complete data)", flush=True)
    _run([*entry_point("run.py", "mamol"), "predict_map", "with", *common, *evaluate, "exp_name=demo_map",
          'map_missing=["none"]'])
    map_dir = _latest_run(runs, "demo_map")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid_dir / "robustness.png", args.figures / "robustness.png")
        shutil.copyfile(map_dir / "map_complete.png", args.figures / "map_complete.png")
        shutil.copyfile(_latest_run(runs, "demo_train") / "curves.png", args.figures / "curves.png")
        print(f"figures copied to {args.figures}: robustness.png, map_complete.png, curves.png")

    print("\nMaMOL on the synthetic scene (tiny random CLIP, one model for every setting)")
    print(f"{'test setting':<20s} {'OA':>7s} {'AA':>7s} {'kappa':>7s}")
    for label, oa, aa, kappa in rows:
        print(f"{label:<20s} {oa:7.2f} {aa:7.2f} {kappa:7.2f}")
    print(f"\nEvery missing type x ratio: {grid_dir / 'grid.md'} and robustness.png; the map: "
          f"{map_dir / 'map_complete.png'}")
    print(f"The scene's six classes are three spectra x two heights: HSI alone tells only the spectrum, LiDAR "
          f"only the height,\nso a single modality cannot separate every class (chance OA is {100 / 6:.1f}).\n"
          f"Done in {time.time() - started:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
