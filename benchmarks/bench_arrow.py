"""Benchmark: convert a Houston-sized synthetic scene to Arrow, then read batches from the Arrow files.

    python benchmarks/bench_arrow.py [--out DIR] [--keep] [--mat-version 5|7.3]

Measures (each step in its own fresh process, so the numbers belong to that step alone):
  * conversion wall time and peak RSS (VmHWM of the converting process) against the goal
    peak RSS <= 1.5 x (HSI cube bytes), and the RSS of a process that only imports the converter;
  * reading: time per batch of 128 random training samples through the dataset a run opens (catalogue entry
    + resolved settings) and a DataLoader (0 workers), per sample, against the goal "well under 1 ms per
    sample"; also 128-pixel batches of whole-scene windows (SceneWindows, as the maps read them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
GOAL_X_CUBE = 1.5  # conversion goal (issue 11.3): peak RSS <= 1.5 x the HSI cube's bytes

_HWM = textwrap.dedent("""
    def _hwm():
        for line in open('/proc/self/status'):
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
""")

GENERATE = _HWM + textwrap.dedent("""
    import json, sys, time
    from mamol.conversion.synthetic import make_houston_sized
    t = time.perf_counter()
    scene = make_houston_sized(sys.argv[1], seed=0, mat_version=sys.argv[2])
    print(json.dumps({"seconds": time.perf_counter() - t, "hsi_bytes": scene.data["hsi"].nbytes,
                      "hsi_shape": list(scene.data["hsi"].shape)}))
""")

IMPORT_ONLY = _HWM + textwrap.dedent("""
    import json
    import mamol.conversion.remote  # noqa: F401
    print(json.dumps({"peak_rss": _hwm()}))
""")

CONVERT = _HWM + textwrap.dedent("""
    import json, sys, time
    from mamol.conversion.remote import prepare_remote
    t = time.perf_counter()
    out = prepare_remote("houston2013", sys.argv[1], sys.argv[2], progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss": _hwm(),
                      "files": {k: [str(v), v.stat().st_size] for k, v in out.items()}}))
""")

READ = textwrap.dedent("""
    import json, sys, time
    import torch
    from torch.utils.data import DataLoader
    from config import defaults
    from mamol.data import catalogue
    from mamol.data.remote import SceneWindows
    from mamol.train import resolve_settings
    root, tables = sys.argv[1], sys.argv[2]
    s = resolve_settings(defaults(data_root=root, missing_table_root=tables, datasets=["houston2013"],
                                  num_gpus=0, num_workers=0))  # the settings a run on these files resolves
    entry = catalogue.entry("houston2013", s.data.root)
    out = {}
    for split in ("train", "test"):
        ds = entry.dataset(entry, s.data, s.missing, split)
        loader = DataLoader(ds, batch_size=128, shuffle=True, collate_fn=ds.collate,
                            generator=torch.Generator().manual_seed(0))
        times, n = [], 0
        t = time.perf_counter()
        for batch in loader:
            now = time.perf_counter()
            times.append(now - t)
            n += len(batch["label"])
            t = now
        out[split] = {"samples": n, "batches": len(times), "first_batch_ms": 1e3 * times[0],
                      "median_batch_ms": 1e3 * sorted(times)[len(times) // 2],
                      "per_sample_us": 1e6 * sum(times) / n}
    scene = SceneWindows.from_settings(s.data, s.missing.fill, "houston2013")  # as the maps read the scene
    loader = DataLoader(scene, batch_size=128, shuffle=False, collate_fn=scene.collate)
    times, t = [], time.perf_counter()
    for i, batch in enumerate(loader):
        now = time.perf_counter(); times.append(now - t); t = now
        if i == 49:
            break
    out["scene_windows"] = {"batches": len(times), "median_batch_ms": 1e3 * sorted(times)[len(times) // 2],
                            "per_sample_us": 1e6 * sum(times) / (128 * len(times)),
                            "pixels": len(scene)}
    print(json.dumps(out))
""")


def _run(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter (repo on the path); return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        raise RuntimeError(f"benchmark step failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the generated scene and Arrow files")
    p.add_argument("--mat-version", choices=("5", "7.3"), default="5", help="format of the generated .mat files")
    args = p.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_arrow_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        gen = _run(GENERATE, str(work / "data_2013"), args.mat_version)
        cube = gen["hsi_bytes"]
        print(f"scene: {gen['hsi_shape']} HSI float32 ({cube / MIB:.1f} MiB) + LiDAR, MAT v{args.mat_version}; "
              f"generated in {gen['seconds']:.1f} s")
        base = _run(IMPORT_ONLY)
        conv = _run(CONVERT, str(work / "data_2013"), str(work / "arrow"))
        goal = GOAL_X_CUBE * cube
        verdict = "met" if conv["peak_rss"] <= goal else "MISSED"
        print(f"convert: {conv['seconds']:.1f} s wall, peak RSS {conv['peak_rss'] / MIB:.0f} MiB "
              f"(= {conv['peak_rss'] / cube:.3f} x cube; goal <= {GOAL_X_CUBE} x cube = {goal / MIB:.0f} MiB: "
              f"{verdict}); a process that only imports the converter peaks at {base['peak_rss'] / MIB:.0f} MiB")
        for _split, (path, size) in conv["files"].items():
            print(f"  {Path(path).name}: {size / MIB:.1f} MiB")
        read = _run(READ, str(work / "arrow"), str(work / "tables"))
        for split in ("train", "test"):
            r = read[split]
            print(f"read {split}: {r['samples']} samples in {r['batches']} shuffled batches of 128: median "
                  f"{r['median_batch_ms']:.1f} ms/batch, {r['per_sample_us']:.0f} us/sample overall "
                  f"(first batch {r['first_batch_ms']:.1f} ms; goal well under 1000 us/sample)")
        s = read["scene_windows"]
        print(f"scene windows: {s['pixels']} pixels; {s['batches']} batches of 128: median "
              f"{s['median_batch_ms']:.1f} ms/batch, {s['per_sample_us']:.0f} us/pixel")
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
