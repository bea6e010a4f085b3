"""Benchmark: peak memory of converting a large GeoTIFF scene in windows, and of predicting its map.

    python benchmarks/bench_large_scene.py [--scale 1.0] [--out DIR] [--compare-in-memory] [--no-maps]

Writes a synthetic scene of (2,000 × 8,000) × ``--scale`` pixels (each side) as GeoTIFFs in the scene-folder
layout: ``HSI.tif`` 48 float32 bands (tiled 256 × 256, band-interleaved: about 3 GB at scale 1), ``LiDAR.tif``
(1 band) and ``All_label.tif`` (8 classes × 500 labelled pixels at random places, whatever the scale; the rest 0).

* **conversion**: ``prepare_remote(windowed=True)`` in a child process (default splits 100 / 50 / 300 per class,
  minmax, with the scene file); prints the child's peak RSS (``ru_maxrss``, which counts the pages of memory
  maps it touched too) as a multiple of the cube (HSI + LiDAR as float32). Goal: at most 0.5×.
  ``--compare-in-memory`` converts in memory as well (needs several times the cube in RAM).
* **maps**: the same scene at half the side (a quarter of the pixels) is converted too; for each of the two, a
  child process predicts the map of the labelled pixels (``predict_maps``, ``map_pixels="labelled"``, complete
  data, batches of 256) with the tiny CLIP (random weights, saved as a plain state dict): the same 4,000
  pixels in scenes of 4× different size, so its peak RSS shows what the scene's size adds. Every pixel of a
  16-million-pixel scene would take hours on a CPU, which is why the labelled pixels are predicted.

Every child runs alone; the working folder (``--out``, default a temporary one, removed) needs about 4× the cube
on disk (the rasters, the padded cube while converting, the Arrow files).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BANDS, CLASSES, PER_CLASS, BLOCK = 48, 8, 500, 256
FULL = (2000, 8000)


def write_scene(folder: Path, height: int, width: int, seed: int = 0) -> int:
    """The scene's GeoTIFFs, written a strip of tiles at a time; returns the cube's bytes (HSI + LiDAR)."""
    import rasterio
    from rasterio.windows import Window

    from mamol.conversion.synthetic import SCENE_CRS, raster_transform

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    common = {"driver": "GTiff", "height": height, "width": width, "crs": SCENE_CRS, "transform": raster_transform(),
              "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER"}
    spectrum = (1000 + 2500 * rng.random(BANDS)).astype(np.float32)  # (C,)
    with rasterio.open(folder / "HSI.tif", "w", count=BANDS, dtype="float32", interleave="band", **common) as hsi, \
            rasterio.open(folder / "LiDAR.tif", "w", count=1, dtype="float32", **common) as lidar:
        for top in range(0, height, BLOCK):
            rows = min(BLOCK, height - top)
            window = Window(0, top, width, rows)
            strip = rng.standard_normal((BANDS, rows, width), dtype=np.float32)  # (C, rows, W)
            strip *= 50.0
            strip += spectrum[:, None, None]
            hsi.write(strip, window=window)
            lidar.write(5.0 + rng.standard_normal((1, rows, width), dtype=np.float32), window=window)
    labels = np.zeros(height * width, dtype=np.uint8)
    places = rng.choice(height * width, CLASSES * PER_CLASS, replace=False)
    labels[places] = np.repeat(np.arange(1, CLASSES + 1), PER_CLASS)
    with rasterio.open(folder / "All_label.tif", "w", count=1, dtype="uint8", **common) as dst:
        dst.write(labels.reshape(1, height, width))
    return height * width * (BANDS + 1) * 4


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child_convert(root: Path, target: Path, windowed: bool) -> dict:
    from mamol.conversion.remote import prepare_remote

    started = time.perf_counter()
    prepare_remote("synthetic", root, target, windowed=windowed, progress=False)
    return {"peak_rss": _peak_rss(), "seconds": time.perf_counter() - started}


def child_map(arrow: Path, work: Path) -> dict:
    import torch

    from config import defaults
    from mamol.experiments.maps import MapOptions, predict_maps
    from mamol.experiments.predict import Predictor, task_infos
    from mamol.module import MaMOLModule
    from mamol.train import resolve_settings

    cfg = defaults("remote", vit="tiny", clip_random_init=True, num_gpus=0, num_workers=0, data_root=str(arrow),
                   datasets=["synthetic"], batch_size=256, per_gpu_batchsize=256, log_dir=str(work / "runs"),
                   missing_table_root=str(work / "tables"))
    s = resolve_settings(cfg, evaluation=True)
    infos = task_infos(s)
    weights = work / "random.pt"
    torch.save(MaMOLModule(s, infos).state_dict(), weights)
    s = resolve_settings({**cfg, "load_path": str(weights)}, evaluation=True)
    predictor = Predictor(s, infos, "bench_large_scene")
    before = _peak_rss()
    started = time.perf_counter()
    maps, truth = predict_maps(s, MapOptions("labelled", ("none",)), predictor, progress=False)
    return {"peak_rss": _peak_rss(), "peak_before": before, "seconds": time.perf_counter() - started,
            "pixels": maps[0].pixels, "shape": list(truth.shape)}


def run_child(*args: str) -> dict:
    """Run this script as a child with ``args``; its JSON result (its own peak RSS)."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="side of the scene as a fraction of 2,000 × 8,000")
    p.add_argument("--out", type=Path, help="working folder (default: temporary, removed)")
    p.add_argument("--compare-in-memory", action="store_true", help="also convert in memory (several × the cube)")
    p.add_argument("--no-maps", action="store_true", help="conversion only")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        result = (child_convert(Path(rest[0]), Path(rest[1]), rest[2] == "windows") if kind == "convert"
                  else child_map(Path(rest[0]), Path(rest[1])))
        print(json.dumps(result))
        return 0

    work = args.out or Path(tempfile.mkdtemp(prefix="bench_large_"))
    try:
        height, width = (max(BLOCK, round(n * args.scale)) for n in FULL)
        t = time.perf_counter()
        cube = write_scene(work / "raw", height, width)
        print(f"scene {height} × {width} × {BANDS} + LiDAR (float32, tiled {BLOCK}×{BLOCK}): cube {gib(cube)}, "
              f"written in {time.perf_counter() - t:.0f} s", flush=True)
        modes = ("windows", "memory") if args.compare_in_memory else ("windows",)
        for mode in modes:
            r = run_child("convert", str(work / "raw"), str(work / f"arrow_{mode}"), mode)
            print(f"conversion in {mode}: peak RSS {gib(r['peak_rss'])} = {r['peak_rss'] / cube:.2f}× the cube "
                  f"({r['seconds']:.0f} s){'  goal <= 0.5×' if mode == 'windows' else ''}", flush=True)
        if args.compare_in_memory:
            same = all((work / "arrow_windows" / f).read_bytes() == (work / "arrow_memory" / f).read_bytes()
                       for f in ("synthetic_train.arrow", "synthetic_test.arrow"))
            print(f"  split files identical: {same}", flush=True)
            shutil.rmtree(work / "arrow_memory")
        shutil.rmtree(work / "raw")
        if args.no_maps:
            return 0
        half = (max(BLOCK, height // 2), max(BLOCK, width // 2))
        write_scene(work / "raw_half", *half, seed=1)
        run_child("convert", str(work / "raw_half"), str(work / "arrow_half"), "windows")
        shutil.rmtree(work / "raw_half")
        for label, arrow in ((f"{half[0]} × {half[1]}", "arrow_half"), (f"{height} × {width}", "arrow_windows")):
            (work / f"map_{arrow}").mkdir()
            r = run_child("map", str(work / arrow), str(work / f"map_{arrow}"))
            print(f"map of {r['pixels']} labelled pixels in a {label} scene: peak RSS {gib(r['peak_rss'])} "
                  f"({gib(r['peak_rss'] - r['peak_before'])} above the loaded model; {r['seconds']:.0f} s)",
                  flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
