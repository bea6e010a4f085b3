"""Benchmark: pixels per second of classification maps, the data side and the whole prediction.

    python benchmarks/bench_maps.py [--arrow DIR] [--out DIR] [--batch 256] [--rounds 5] [--vit tiny ViT-B/16]

On a Houston-sized synthetic scene (349 x 1905, HSI 144 bands + LiDAR; generated and converted unless
``--arrow`` names a folder that already holds ``houston2013_*.arrow``), in one process, side by side:

* data side: windows of consecutive pixels (row-major, as ``predict_map`` reads them with ``map_pixels=all``)
  through a DataLoader with batches of ``--batch`` pixels, (a) one window per ``__getitem__`` call and
  ``collate_samples`` (the path before batched cutting) and (b) ``SceneWindows.__getitems__`` (one gather per
  modality). The two are interleaved over ``--rounds`` rounds, each round reading the same pixels with both;
  the figure is the median over rounds of microseconds per pixel;
* whole prediction: the same batches through the model (random weights, ``clip_random_init``) and argmax, for
  each ``--vit`` (the tiny test backbone and ViT-B/16 shapes), in pixels per second.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import defaults  # noqa: E402
from mamol.conversion.remote import prepare_remote  # noqa: E402
from mamol.conversion.synthetic import make_houston_sized  # noqa: E402
from mamol.data.base import collate_samples  # noqa: E402
from mamol.data.remote import SceneWindows  # noqa: E402
from mamol.methods import build_model, method_class  # noqa: E402
from mamol.settings import resolve_model  # noqa: E402
from mamol.tasks import REMOTE, TaskInfo  # noqa: E402


class PerPixel(Dataset):
    """The scene read one window per ``__getitem__`` (no ``__getitems__``): the path before batched cutting."""

    def __init__(self, scene: SceneWindows) -> None:
        self.scene = scene

    def __len__(self) -> int:
        return len(self.scene)

    def __getitem__(self, index: int) -> dict:
        return self.scene[index]


class Span(Dataset):
    """``count`` consecutive pixels of ``dataset`` from ``start`` (the same pixels for both paths of a round)."""

    def __init__(self, dataset: Dataset, start: int, count: int) -> None:
        self.dataset, self.start, self.count = dataset, start, count
        if hasattr(dataset, "__getitems__"):
            self.__getitems__ = lambda indices: dataset.__getitems__([start + i for i in indices])

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.start + index]


def _time_loader(loader: DataLoader) -> tuple[float, int]:
    started, pixels = time.perf_counter(), 0
    for batch in loader:
        pixels += len(batch["label"])
    return time.perf_counter() - started, pixels


def data_side(scene: SceneWindows, batch: int, batches: int, rounds: int, seed: int = 0) -> dict[str, float]:
    """Median µs/pixel of the per-pixel and the batched path, interleaved round by round."""
    rng = np.random.default_rng(seed)
    count = batch * batches
    results: dict[str, list[float]] = {"per_pixel": [], "batched": []}
    per_pixel = PerPixel(scene)
    for r in range(rounds + 1):  # round 0 warms the page cache and allocator; not counted
        start = int(rng.integers(0, len(scene) - count))
        order = ("per_pixel", "batched") if r % 2 else ("batched", "per_pixel")
        for name in order:
            if name == "per_pixel":
                loader = DataLoader(Span(per_pixel, start, count), batch_size=batch, collate_fn=collate_samples)
            else:
                loader = DataLoader(Span(scene, start, count), batch_size=batch, collate_fn=scene.collate)
            seconds, pixels = _time_loader(loader)
            if r:
                results[name].append(1e6 * seconds / pixels)
    return {name: statistics.median(values) for name, values in results.items()}


def whole_prediction(scene: SceneWindows, vit: str, batch: int, batches: int, device: str) -> float:
    """Pixels per second of cutting windows, the model's forward and argmax (random weights)."""
    bands = scene.bands
    info = TaskInfo(name="houston2013", kind="remote", task_type=REMOTE, modalities=scene.modalities,
                    bands=dict(bands), num_classes=15, class_names=tuple(f"c{i}" for i in range(15)),
                    patch_size=scene.patch_size, metadata={})
    cfg = defaults("remote", vit=vit, clip_random_init=True)
    model = build_model(*resolve_model(cfg, "remote", method_class(cfg["method"]).Options), [info]).to(device).eval()
    loader = DataLoader(Span(scene, len(scene) // 3, batch * (batches + 1)), batch_size=batch,
                        collate_fn=scene.collate)
    pixels, started = 0, None
    with torch.inference_mode():
        for i, b in enumerate(loader):
            if i == 1:  # the first batch warms up (kernels, caches); timing starts after it
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
            labels = model(b).argmax(1).cpu()
            if i >= 1:
                pixels += len(labels)
    if device == "cuda":
        torch.cuda.synchronize()
    return pixels / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arrow", type=Path, help="folder with houston2013_*.arrow (default: generate and convert)")
    p.add_argument("--out", type=Path, help="working folder when generating (default: temporary, removed)")
    p.add_argument("--batch", type=int, default=256, help="pixels per batch")
    p.add_argument("--batches", type=int, default=8, help="batches per path and round (data side)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (data side)")
    p.add_argument("--vit", nargs="*", default=["tiny", "ViT-B/16"], help="backbones for the whole prediction")
    p.add_argument("--model-batches", type=int, default=2, help="timed batches per backbone")
    p.add_argument("--model-batch", type=int, default=32, help="pixels per batch for the whole prediction")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scene", default="houston2013", help="scene name in --arrow (generated: houston2013)")
    args = p.parse_args(argv)
    work = None
    if args.arrow is None:
        work = args.out or Path(tempfile.mkdtemp(prefix="bench_maps_"))
        t = time.perf_counter()
        make_houston_sized(work / "data_2013", seed=0)
        prepare_remote("houston2013", work / "data_2013", work / "arrow", progress=False)
        print(f"generated and converted a Houston-sized scene in {time.perf_counter() - t:.0f} s", flush=True)
        arrow = work / "arrow"
    else:
        arrow = args.arrow
    try:
        scene = SceneWindows(arrow / f"{args.scene}_scene.arrow")
        print(f"scene: {scene.height} x {scene.width} = {len(scene)} pixels, modalities {scene.bands}, "
              f"threads {torch.get_num_threads()}")
        data = data_side(scene, args.batch, args.batches, args.rounds)
        print(f"data side, batches of {args.batch} consecutive pixels, median of {args.rounds} interleaved rounds:\n"
              f"  one window per __getitem__ + collate: {data['per_pixel']:7.1f} us/pixel "
              f"({1e6 / data['per_pixel']:8.0f} pixels/s)\n"
              f"  batched (__getitems__):               {data['batched']:7.1f} us/pixel "
              f"({1e6 / data['batched']:8.0f} pixels/s)\n"
              f"  speed-up: {data['per_pixel'] / data['batched']:.1f}x (goal >= 10x faster than 124 us/pixel: "
              f"{124 / data['batched']:.1f}x)", flush=True)
        for vit in args.vit:
            rate = whole_prediction(scene, vit, args.model_batch, args.model_batches, args.device)
            print(f"whole prediction, {vit} ({args.device}), batches of {args.model_batch}: {rate:.1f} pixels/s "
                  f"({1e6 / rate:.0f} us/pixel; a full {len(scene)}-pixel map: {len(scene) / rate / 60:.1f} min)",
                  flush=True)
    finally:
        if work is not None and args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
