"""Convert raw datasets to Arrow files: ``python -m mamol.convert`` (``datasets/make_arrow.py`` calls it).

The work is in :mod:`mamol.conversion`: this module parses the options and runs each dataset's registered
converter (:mod:`mamol.conversion.converters`). Remote scenes (SPEC §3.1)::

    python datasets/make_arrow.py --dataset houston2013 --root data_2013 --target ARROW_ROOT
    cd datasets && python make_arrow.py      # converts each known scene folder here (data_2013/, data_trento/, ...)

Any other ``--dataset NAME`` converts a custom scene folder (classes named class_1..K).
Natural image-text data (SPEC §3.2): ``--dataset {mmimdb,food101,hateful_memes} --root RAW``, e.g.::

    python datasets/make_arrow.py --dataset food101 --root UPMC_Food101 --split-file my_split.json \
        --allow-missing-text
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mamol.cli import print_error
from mamol.conversion.converters import NATURAL_CONVERTERS, converter
from mamol.conversion.layout import default_scene_jobs
from mamol.conversion.remote import human_bytes
from mamol.conversion.splits import SPLIT_METHODS
from mamol.conversion.windowed import WINDOWED_ABOVE
from mamol.data import catalogue
from mamol.data.formats import NAN_POLICIES, NORMALIZATIONS
from mamol.data.scenes import KNOWN_SCENES, default_split
from mamol.errors import ConfigError, MamolError, MissingFileError
from mamol.files import storage_errors

NATURAL = tuple(NATURAL_CONVERTERS)
# Image-text option (argparse dest = keyword of the converters) -> the datasets it applies to, from the registry.
NATURAL_OPTIONS: dict[str, tuple[str, ...]] = {}
for _conv in NATURAL_CONVERTERS.values():
    for _option in _conv.options:
        NATURAL_OPTIONS[_option] = (*NATURAL_OPTIONS.get(_option, ()), _conv.name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help=f"{', '.join(KNOWN_SCENES)}, a custom scene name, or {', '.join(NATURAL)}; "
                                     "omitted: convert every known scene folder in the current directory")
    p.add_argument("--root", type=Path, help="raw data folder (default for known scenes: ./data_2013 etc.)")
    p.add_argument("--target", type=Path, default=Path("."), help="output folder for the .arrow files (default .)")
    g = p.add_argument_group("remote scenes")
    g.add_argument("--normalize", choices=NORMALIZATIONS, default="minmax", help="per-band normalisation")
    g.add_argument("--split", choices=SPLIT_METHODS,
                   help="default: the known scene's default split (random for all), else random. "
                        "random: disjoint seeded per-class draws; fixed: TRLabel/TSLabel rasters (val from TR); "
                        "release: the release's independent train and test draws (test overlaps train; the overlap "
                        "is printed and recorded)")
    g.add_argument("--train-per-class", type=int, default=100, help="-1 = all remaining")
    g.add_argument("--val-per-class", type=int, default=50, help="-1 = all remaining")
    g.add_argument("--test-per-class", type=int, default=300, help="-1 = all remaining")
    g.add_argument("--seed", type=int, default=0, help="seed of the split draw")
    g.add_argument("--strict-counts", action="store_true",
                   help="fail when a class has fewer pixels than train + val + test ask for (default: its test "
                        "split takes what remains, with a warning)")
    g.add_argument("--patch-size", type=int, default=14, help="patch side in pixels (14 fits ViT-B/16)")
    g.add_argument("--nan", choices=NAN_POLICIES, default="refuse",
                   help="NaN/Inf in a cube: refuse (default) or fill with the band mean (warns)")
    g.add_argument("--modalities", nargs="+", help="store only these (default: every modality found)")
    g.add_argument("--resample", action="store_true",
                   help="GeoTIFF / ENVI rasters on another grid (CRS, transform, size) than the first modality: "
                        "reproject them onto its grid (bilinear for data, nearest for labels) instead of failing")
    g.add_argument("--windowed", action=argparse.BooleanOptionalAction, default=None,
                   help="read GeoTIFF / ENVI modalities in windows of rows (two passes: statistics band by band, then "
                        "the padded cube on disk), so memory stays far below the cube; the files are the same as in "
                        "memory. Default: in windows when a modality's padded cube exceeds "
                        f"{WINDOWED_ABOVE / 2**30:g} GiB")
    g.add_argument("--no-scene", action="store_true", help="skip <scene>_scene.arrow (needed for full-scene maps)")
    n = p.add_argument_group("natural image-text data")
    n.add_argument("--split-file", type=Path,
                   help="mmimdb, food101: split JSON (default: split.json in --root, else the one in datasets/)")
    n.add_argument("--class-idx-file", type=Path,
                   help="food101: class -> index JSON (default: class_idx.json in --root, else the shipped one)")
    n.add_argument("--allow-missing-text", action="store_true",
                   help="food101: skip (with a warning) images without a title instead of failing")
    n.add_argument("--allow-missing-test", action="store_true",
                   help="hateful_memes: without a labelled test file write only train and dev instead of failing")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only (bars show on a terminal only anyway)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an input error (default: one line)")
    args = p.parse_args(argv)
    dataset = catalogue.canonical_name(args.dataset or "")
    for dest, datasets in NATURAL_OPTIONS.items():
        if getattr(args, dest) not in (None, False) and dataset not in datasets:
            p.error(f"--{dest.replace('_', '-')} applies to --dataset {' or '.join(datasets)} only; "
                    f"got --dataset {args.dataset or '(none)'}")
    return args


def convert(args: argparse.Namespace, dataset: str, root: Path) -> dict[str, Path]:
    """Run the registered converter of ``dataset`` with the CLI options; {split or "scene": file}."""
    entry = converter(dataset)
    progress = not args.quiet and sys.stderr.isatty()  # a bar redrawn with "\r" is unreadable in a log file
    if entry.kind == "remote":
        return entry.convert(
            root, args.target, modalities=args.modalities, patch_size=args.patch_size, normalize=args.normalize,
            split=args.split or default_split(entry.name), train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            test_per_class=args.test_per_class, seed=args.seed, nan=args.nan, write_scene=not args.no_scene,
            progress=progress, strict_counts=args.strict_counts, resample=args.resample,
            windowed=args.windowed)
    options = {dest: getattr(args, dest) for dest in entry.options}
    written = entry.convert(root, args.target, progress=progress, **options)
    return {path.stem.rsplit("_", 1)[1]: path for path in written}  # mmimdb_dev.arrow -> "dev"


def jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(dataset, raw folder) pairs to convert."""
    if args.dataset is None:
        found = default_scene_jobs(Path.cwd())
        if not found:
            folders = ", ".join(f"{s.folder}/" for s in KNOWN_SCENES.values())
            raise MissingFileError(f"none of {folders} found in {Path.cwd()}; pass --dataset and --root")
        return found
    dataset = args.dataset.lower()
    if args.root is not None:
        return [(dataset, args.root)]
    if dataset in KNOWN_SCENES:
        return [(dataset, Path.cwd() / KNOWN_SCENES[dataset].folder)]
    raise ConfigError(f"--root is required for dataset {args.dataset!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    created = not args.target.exists()  # a target this run creates is removed again if it stays empty
    try:
        if args.target.exists() and not args.target.is_dir():
            raise ConfigError(f"--target {args.target} is a file; expected the folder to write the .arrow files into")
        for dataset, root in jobs(args):
            with storage_errors(f"the Arrow files into --target {args.target}"):
                written = convert(args, dataset, root)
            for split, path in written.items():
                print(f"{dataset:>12} {split:>5}: {path} ({human_bytes(path.stat().st_size)})")
    except MamolError as err:
        if created and args.target.is_dir() and not any(args.target.iterdir()):
            args.target.rmdir()
        if args.debug:
            raise
        return print_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
