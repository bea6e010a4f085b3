"""The split protocol of remote scenes: which labelled pixels go to train, val and test.

Two protocols, both seeded and returning ``split -> sorted flat pixel indices`` (raster order):

* :func:`draw_split` (``--split random``): disjoint per-class draws of fixed counts, in the order train,
  val, test (100 / 50 / 300 per class by default);
* :func:`fixed_split` (``--split fixed``): the scene's TR/TS rasters, with validation pixels carved from TR;
* :func:`release_split` (``--split release``): the release's sampling, for comparison with its numbers: train
  and test drawn independently of each other, so test pixels may be training pixels (the overlap is counted).

Pure numpy on label rasters: no file is read here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mamol.errors import DataError
from mamol.tasks import SPLITS

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_METHODS", "draw_split", "fixed_split", "release_split"]

SPLIT_METHODS = ("random", "fixed", "release")
"""``--split``: disjoint seeded draws, the TR/TS rasters, or the release's overlapping draws."""


def _check_count(split: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < -1:
        raise DataError(f"{split}_per_class must be an integer >= 0, or -1 for all remaining; got {value!r}")
    return int(value)


def draw_split(
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: dict[str, int],
    seed: int,
    strict: bool = False,
) -> dict[str, np.ndarray]:
    """Disjoint seeded per-class samples: split -> sorted flat pixel indices (raster order).

    ``per_class[split]`` pixels of each class go to each split in the order train, val, test; -1 takes all
    that remain. A class too small for its train and val counts is a ValueError naming it and the counts.
    When fewer pixels than ``per_class["test"]`` remain for test (Houston2013's Water has 325 labelled
    pixels, fewer than 100 + 50 + 300), test takes what is left and a warning names the class, unless
    ``strict``, which makes that an error too. A class with no pixel left for test is always an error.
    """
    counts = {s: _check_count(s, per_class.get(s, 0)) for s in SPLITS}
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    chosen: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for k, name in enumerate(class_names, start=1):
        pixels = rng.permutation(np.flatnonzero(flat == k))
        start = 0
        for split in SPLITS:
            want = counts[split]
            take = len(pixels) - start if want == -1 else want
            left = len(pixels) - start
            if take > left:
                asked = ", ".join(f"{s} {'all' if counts[s] == -1 else counts[s]}" for s in SPLITS)
                if split != "test" or strict or left == 0:
                    raise DataError(
                        f"class {k} ({name!r}) has {len(pixels)} labelled pixels, fewer than requested ({asked}); "
                        f"lower the per-class counts or pass -1 to take all remaining"
                    )
                logger.warning("class %d (%r) has %d labelled pixels, fewer than requested (%s): its test split "
                               "takes the %d that remain", k, name, len(pixels), asked, left)
                take = left
            chosen[split].append(pixels[start:start + take])
            start += take
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in chosen.items()}


FIXED_MIN_TRAIN_FRACTION = 0.5
"""``--split fixed``: validation never takes more than half of a class's TR pixels (training keeps the rest)."""


def fixed_split(
    train_raster: np.ndarray,
    test_raster: np.ndarray,
    class_names: Sequence[str],
    val_per_class: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Split from TR/TS rasters: test = TS pixels, val = up to ``val_per_class`` seeded TR pixels per class,
    train = the rest of TR.

    Validation takes at most half of a class's TR pixels (:data:`FIXED_MIN_TRAIN_FRACTION`), so a small class
    keeps most of its few training pixels; every class's TR -> train / val counts are logged, and the capped
    classes are named in a warning. A class with fewer than 2 TR pixels is refused (none left to train on).
    """
    if val_per_class < 0:
        raise DataError(f"val_per_class must be >= 0 with split='fixed' (carved from TR), got {val_per_class}")
    overlap = int(((train_raster > 0) & (test_raster > 0)).sum())
    if overlap:
        logger.warning("TR and TS rasters share %d labelled pixels; they stay in both train and test", overlap)
    rng = np.random.default_rng(seed)
    tr, ts = train_raster.ravel(), test_raster.ravel()
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    capped = []
    for k, name in enumerate(class_names, start=1):
        pixels = rng.permutation(np.flatnonzero(tr == k))
        if val_per_class and len(pixels) < 2:
            raise DataError(
                f"class {k} ({name!r}) has {len(pixels)} pixel(s) in the TR raster: too few to give validation "
                f"any and keep one for training; pass --val-per-class 0 or fix the raster")
        take = min(val_per_class, int(len(pixels) * (1 - FIXED_MIN_TRAIN_FRACTION)))
        if take < val_per_class:
            capped.append(f"{name!r} {take} of {len(pixels)}")
        logger.info("split='fixed': class %d (%r): %d TR pixels -> %d train, %d validation; %d TS pixels -> test",
                    k, name, len(pixels), len(pixels) - take, take, int((ts == k).sum()))
        parts["val"].append(pixels[:take])
        parts["train"].append(pixels[take:])
        parts["test"].append(np.flatnonzero(ts == k))
    if capped:
        logger.warning("split='fixed': validation takes at most half of a class's TR pixels, so these classes give "
                       "fewer than --val-per-class %d: %s", val_per_class, ", ".join(capped))
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in parts.items()}


def release_split(
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: dict[str, int],
    seed: int,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """The release's sampling (``datasets/make_arrow_2.py``: 100 training and 300 test pixels per class, both from
    all labelled pixels, unseeded there, seeded here): (split -> sorted flat pixel indices, per-class overlap).

    Each class's train and test pixels are independent draws without replacement from all its labelled pixels,
    each capped at the class size (a class smaller than a draw gives all its pixels, with a warning); validation
    (``per_class["val"]``) is drawn from the pixels not in train, independently of test (the release validated on
    its test set; here checkpoint selection at least never sees training pixels). The overlap, test pixels that
    are also training pixels, is logged per class and in total as a warning and returned per class.
    """
    counts = {s: _check_count(s, per_class.get(s, 0)) for s in SPLITS}
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    chosen: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    overlap, small = [], []
    for k, name in enumerate(class_names, start=1):
        pixels = np.flatnonzero(flat == k)
        take = {s: len(pixels) if counts[s] == -1 else min(counts[s], len(pixels)) for s in ("train", "test")}
        if any(counts[s] > len(pixels) for s in ("train", "test")):
            small.append(f"{name!r} ({len(pixels)})")
        train = rng.choice(pixels, take["train"], replace=False)
        test = rng.choice(pixels, take["test"], replace=False)
        rest = np.setdiff1d(pixels, train)
        n_val = len(rest) if counts["val"] == -1 else min(counts["val"], len(rest))
        chosen["train"].append(train)
        chosen["test"].append(test)
        chosen["val"].append(rng.choice(rest, n_val, replace=False))
        overlap.append(int(np.intersect1d(train, test).size))
    if small:
        logger.warning("split='release': classes with fewer labelled pixels than a draw give all of them: %s",
                       ", ".join(small))
    total = sum(len(t) for t in chosen["test"])
    logger.warning("split='release': %d of %d test pixels are also training pixels (per class: %s); test pixels "
                   "overlap training pixels, as in the release: scores are comparable with its numbers, not an "
                   "unbiased test", sum(overlap), total,
                   ", ".join(f"{n!r} {o}" for n, o in zip(class_names, overlap)))
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in chosen.items()}, overlap


def warn_about_sizes(counts: dict[str, Sequence[int]], class_names: Sequence[str]) -> list[str]:
    """Warn once (and return the warnings) when validation is empty or tiny, or test is smaller than validation.

    ``counts[split]`` holds the per-class sample counts of each split.
    """
    n_classes = len(class_names)
    total = {s: int(sum(counts[s])) for s in SPLITS}
    suggest = max(1, min(50, total["train"] // max(2 * n_classes, 1)))
    warnings = []
    if total["val"] == 0:
        warnings.append(f"the validation split is empty: no checkpoint can be chosen on validation and training "
                        f"tests its last weights; e.g. --val-per-class {suggest}")
    elif total["val"] < 5 * n_classes:
        warnings.append(f"the validation split is tiny ({total['val']} samples for {n_classes} classes): choosing the "
                        f"best checkpoint on it is noisy; e.g. --val-per-class {max(suggest, 5)}")
    if 0 < total["test"] < total["val"]:
        warnings.append(f"the test split ({total['test']} samples) is smaller than validation ({total['val']}): "
                        f"test scores will be noisier than the model selection; e.g. --val-per-class "
                        f"{max(1, total['test'] // max(2 * n_classes, 1))} or more --test-per-class")
    for text in warnings:
        logger.warning(text)
    return warnings
