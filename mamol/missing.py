"""Missing-modality codes and missing tables (SPEC §4) — the one place that defines them.

A dataset has an ordered tuple of modality names, its *code order*. The per-sample ``missing_type`` is a
bitmask over that order: bit ``i`` set <=> modality ``i`` is missing. ``0`` = complete; the all-missing
code ``2**M - 1`` never occurs.

* remote, 2 modalities ``(hsi, lidar)`` or ``(hsi, sar)``: 0 complete, 1 HSI missing, 2 second missing;
* remote, 3 modalities ``(hsi, lidar, sar)``: 1 HSI, 2 LiDAR, 4 SAR; 3/5/6 = two missing;
* natural data, code order ``("text", "image")``: 0 complete, 1 text missing, 2 image missing.

Missing *types* (what a split simulates) are parsed by :func:`parse_missing_type` into a canonical string:

* a single modality name (``"hsi"``, ``"lidar"``, ``"text"``, ...): every chosen sample loses it;
* ``"both"`` (two-modality data only): chosen samples lose the first modality, a ``both_ratio`` fraction of
  them loses the second instead (never both at once);
* a pair ``"<a>_<b>"`` (three or more modalities): ``missing_ratio`` of the samples lose ``a`` and an
  independent ``missing_ratio_2`` of them lose ``b`` (overlaps allowed: then both are missing);
* all modality names joined in code order (e.g. ``"hsi_lidar_sar"``, written ``HS_SAR_Lidar`` in the
  paper's scripts; three or more modalities): ``missing_ratio`` of the samples each draw a pattern
  uniformly from the non-empty, non-full patterns;
* ``"none"``: every sample complete.

The canonical spelling (the modality names in lower case, ``both``, ``none``) is what the project writes: file
names, ``grid.csv``, ``test_results.json``, figure labels (:func:`mamol.experiments.plots.type_label`). The
release's spellings (``HS``, ``LiDAR``, ``Both``, ``HS_Lidar``, ``HS_SAR_Lidar``) are accepted as input.

Tables are drawn with a dedicated ``numpy.random.default_rng(seed)`` (never the global random state), saved
with the parameters that made them and reused (:func:`load_or_make_missing_table`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mamol.errors import ConfigError, DataError
from mamol.files import atomic_write
from mamol.locks import FileLock

logger = logging.getLogger(__name__)

COMPLETE = 0
"""Code of a complete sample (no modality missing)."""

# Natural data (code order ("text", "image")).
TEXT_MISSING = 1
IMAGE_MISSING = 2
# Remote data (code order (hsi, second[, third])).
FIRST_MISSING = 1
SECOND_MISSING = 2
THIRD_MISSING = 4

TABLE_FORMAT_VERSION = 1

# Spellings accepted for each modality (case-insensitive), mapped to the canonical lower-case name.
MODALITY_ALIASES: dict[str, str] = {
    "hsi": "hsi", "hs": "hsi", "hyperspectral": "hsi",
    "lidar": "lidar", "dsm": "lidar",
    "sar": "sar",
    "msi": "msi", "ms": "msi", "multispectral": "msi",
    "text": "text", "txt": "text",
    "image": "image", "img": "image",
}

_SEPARATORS = ("+", "-", " ", ",", "/")


def missing_code(missing: Sequence[str], modalities: Sequence[str]) -> int:
    """Bitmask code for the set ``missing`` of modality names under the code order ``modalities``."""
    code = 0
    for name in missing:
        if name not in modalities:
            raise ValueError(f"modality {name!r} is not one of the code order {tuple(modalities)}")
        code |= 1 << list(modalities).index(name)
    return code


def is_missing(code: int, index: int) -> bool:
    """True where ``code`` marks modality ``index`` (its position in the code order) missing."""
    return bool(int(code) >> index & 1)


def missing_names(code: int, modalities: Sequence[str]) -> tuple[str, ...]:
    """Names of the modalities that ``code`` marks missing (inverse of :func:`missing_code`)."""
    return tuple(m for i, m in enumerate(modalities) if is_missing(code, i))


def valid_codes(n_modalities: int) -> tuple[int, ...]:
    """All codes that can occur with ``n_modalities``: 0 .. 2**M - 2 (never all missing)."""
    if n_modalities < 1:
        raise ValueError(f"n_modalities must be >= 1, got {n_modalities}")
    return tuple(range(2**n_modalities - 1))


def missing_bits(missing_type: Tensor, n_modalities: int) -> Tensor:
    """(B,) int codes -> (B, M) int64, 1 where modality ``m`` is missing (the bits of :func:`is_missing`)."""
    bits = torch.arange(n_modalities, device=missing_type.device)  # (M,)
    return (missing_type.long().unsqueeze(-1) >> bits) & 1  # (B, M)


def present_mask(missing_type: Tensor, n_modalities: int) -> Tensor:
    """(B,) int codes -> (B, M) bool, True where modality ``m`` is present."""
    return missing_bits(missing_type, n_modalities) == 0  # (B, M)


def present_rows(present: Tensor) -> list[Tensor]:
    """Per modality, the rows (n_m,) int64 ascending where it is present, from a (B, M) presence mask.

    The counts n_m size the batches an encoder runs on, so the host must know them: they are read once, in one
    transfer (on a GPU the one synchronisation of a forward that skips missing rows). The indices come from a
    stable sort, which reads nothing on the host (``nonzero`` per modality would sync once each).
    """
    counts = present.sum(dim=0).tolist()  # [n_m], the host read
    order = (~present).t().to(torch.int8).argsort(dim=1, stable=True)  # (M, B): present rows first, in order
    return [order[m, :count] for m, count in enumerate(counts)]


def _tokens(name: str) -> list[str]:
    """The lower-case words of a missing type as written: ``'HS_SAR+Lidar'`` -> ``['hs', 'sar', 'lidar']``."""
    low = name.strip().lower()
    for sep in _SEPARATORS:
        low = low.replace(sep, "_")
    return [t for t in low.split("_") if t]


def spelling(name: str) -> str:
    """The project's spelling of a missing type as given, without a dataset to check it against: lower case, each
    modality by its canonical name, joined by ``_`` in the order given (``'HS'`` -> ``'hsi'``, ``'HS_Lidar'`` ->
    ``'hsi_lidar'``, ``'Both'`` -> ``'both'``). For names (a sweep run's folder); :func:`parse_missing_type` checks
    a type against the data's modalities and orders an all-modality type."""
    words = _tokens(name)
    if words == ["complete"]:
        return "none"
    return "_".join(MODALITY_ALIASES.get(t, t) for t in words)


def _canonical_modality(token: str, modalities: Sequence[str], name: str) -> str:
    low = token.strip().lower()
    canon = MODALITY_ALIASES.get(low, low)
    if canon not in modalities:
        others = "'both'" if len(modalities) < 3 else f"a pair like '{modalities[0]}_{modalities[1]}'"
        raise ConfigError(
            f"missing_type {name!r}: {token!r} is not a modality of this dataset; expected one of "
            f"{tuple(modalities)} (or {others} / 'none')"
        )
    return canon


def parse_missing_type(name: str, modalities: Sequence[str]) -> str:
    """Canonical missing-type string for ``name`` under the code order ``modalities`` (case-insensitive).

    ``'HS'`` -> ``'hsi'``, ``'LiDAR'`` -> ``'lidar'``, ``'Both'`` -> ``'both'``, ``'HS_Lidar'`` ->
    ``'hsi_lidar'``, ``'HS_SAR_Lidar'`` -> ``'hsi_lidar_sar'`` (all modalities: code order). Raises a
    ValueError naming the value and what is accepted otherwise.
    """
    modalities = tuple(modalities)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"missing_type must be a non-empty string, got {name!r}")
    low = name.strip().lower()
    if low in ("none", "complete"):
        return "none"
    if low == "both":
        if len(modalities) != 2:
            raise ConfigError(
                f"missing_type 'both' needs exactly two modalities, this dataset has {modalities}; "
                f"use a pair like '{modalities[0]}_{modalities[1]}' or all of them "
                f"'{'_'.join(modalities)}'"
            )
        return "both"
    names = [_canonical_modality(t, modalities, name) for t in _tokens(name)]
    if len(set(names)) != len(names):
        raise ConfigError(f"missing_type {name!r} names a modality twice ({names})")
    if len(names) == 1:
        return names[0]
    if len(names) == len(modalities):
        if len(modalities) == 2:
            raise ConfigError(
                f"missing_type {name!r} names both modalities of {modalities}; use 'both' (a mix of "
                f"single-missing samples, controlled by both_ratio)"
            )
        return "_".join(modalities)  # uniform mix over all non-full patterns: order-free, code order
    if len(names) == 2:
        return "_".join(names)  # pair: order matters (first uses missing_ratio, second missing_ratio_2)
    raise ConfigError(
        f"missing_type {name!r} names {len(names)} of the {len(modalities)} modalities {modalities}; "
        f"expected one modality, a pair, all of them, 'both' (two modalities) or 'none'"
    )


def _floor_count(ratio: float, n: int) -> int:
    # floor(ratio * n) with a small tolerance so decimal ratios count as written (0.29 * 100 -> 29, not 28).
    return int(math.floor(ratio * n + 1e-9))


def _check_ratio(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class MissingSetting:
    """What one split simulates: the parameters that determine its missing table (see :func:`make_missing_table`)."""

    ratio: float  # fraction of samples with something missing (``missing_ratio``)
    type: str  # as given: a modality name, "both", a pair, all modalities, or "none" (``missing_type``)
    both_ratio: float  # with "both": fraction of the missing samples that lose the second modality
    ratio_2: float  # pair types: fraction of the samples that lose the second modality (``missing_ratio_2``)
    seed: int  # seed of the table's dedicated generator (``missing_seed``)

    def describe(self) -> str:
        """``"both at 0.7"``-style label for reports."""
        return "complete" if self.type == "none" else f"{self.type} at {self.ratio:g}"


def make_missing_table(n: int, modalities: Sequence[str], setting: MissingSetting) -> Tensor:
    """Draw a (n,) int64 table of missing-type codes with a dedicated generator seeded by ``setting.seed``.

    Exact counts with N = ``n``, r = ``setting.ratio``, b = ``both_ratio``, r2 = ``ratio_2`` and
    ``floor`` = floor(x + 1e-9) (the tolerance keeps decimal ratios exact):

    * single modality m: floor(r*N) distinct samples lose m;
    * ``both``: n_missing = floor(r*N) distinct samples; of those n_second = floor(b*n_missing) lose the
      second modality (code 2), the other n_missing - n_second lose the first (code 1).
      0.7 / both / 0.5 on N=1000 -> 300 complete, 350 code 1, 350 code 2;
    * pair ``a_b``: floor(r*N) distinct samples lose a, independently floor(r2*N) distinct samples lose b;
    * all modalities (``hsi_lidar_sar``): floor(r*N) distinct samples each draw a code uniformly from
      1 .. 2**M - 2;
    * ``none``: all zeros.
    """
    missing_type, seed = setting.type, setting.seed
    modalities = tuple(modalities)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(modalities) < 1:
        raise ValueError("modalities must name at least one modality")
    r = _check_ratio("missing_ratio", setting.ratio)
    b = _check_ratio("both_ratio", setting.both_ratio)
    r2 = _check_ratio("missing_ratio_2", setting.ratio_2)
    kind = parse_missing_type(missing_type, modalities)
    rng = np.random.default_rng(seed)
    table = np.zeros(n, dtype=np.int64)
    if kind == "none":
        pass
    elif kind == "both":
        n_missing = _floor_count(r, n)
        chosen = rng.permutation(n)[:n_missing]
        n_second = _floor_count(b, n_missing)
        table[chosen[:n_second]] = SECOND_MISSING
        table[chosen[n_second:]] = FIRST_MISSING
    elif kind in modalities:
        if len(modalities) == 1:
            raise ConfigError(f"missing_type {missing_type!r} would remove the only modality {modalities}")
        chosen = rng.choice(n, size=_floor_count(r, n), replace=False)
        table[chosen] = missing_code([kind], modalities)
    elif kind == "_".join(modalities):
        chosen = rng.choice(n, size=_floor_count(r, n), replace=False)
        table[chosen] = rng.integers(1, 2 ** len(modalities) - 1, size=len(chosen))
    else:  # pair a_b
        first, second = kind.split("_")
        lose_first = rng.choice(n, size=_floor_count(r, n), replace=False)
        lose_second = rng.choice(n, size=_floor_count(r2, n), replace=False)
        table[lose_first] |= missing_code([first], modalities)
        table[lose_second] |= missing_code([second], modalities)
    return torch.from_numpy(table)


def simulate_missing(
    n_modalities: int, generator: np.random.Generator | torch.Generator, include_complete: bool = True
) -> int:
    """Draw a random code for a complete training sample (``simulate_missing=True``).

    Uniform over the codes 0 .. 2**M - 2, as DCP's redraw (``include_complete=False`` leaves out 0).
    ``generator`` is the caller's dedicated numpy or torch generator.
    """
    low = 0 if include_complete else 1
    high = 2**n_modalities - 1  # exclusive: never all missing
    if high <= low:
        raise ValueError(f"cannot simulate a missing modality with {n_modalities} modality")
    if isinstance(generator, torch.Generator):
        return int(torch.randint(low, high, (1,), generator=generator).item())
    return int(generator.integers(low, high))


def _ratio_tag(ratio: float) -> str:
    text = np.format_float_positional(float(ratio), trim="0")  # 0.7 -> "0.7", 1.0 -> "1.0", 0.05 -> "0.05"
    return text.replace(".", "")


def missing_table_path(root: str | os.PathLike, arrow_name: str, missing_type: str, ratio: float,
                       data_key: str = "") -> Path:
    """``<root>/<arrowname>_missing_<type>_<ratio without its dot>[_<data key>].pt`` (0.7 -> ``07``).

    ``arrow_name`` may carry the ``.arrow`` suffix; ``data_key`` (see :func:`data_key`) tells apart tables of
    two conversions of the same split kept in one folder.
    """
    stem = arrow_name[: -len(".arrow")] if arrow_name.endswith(".arrow") else arrow_name
    kind = missing_type.strip().lower().replace(" ", "_").replace("/", "_")
    suffix = f"_{data_key}" if data_key else ""
    return Path(root) / f"{stem}_missing_{kind}_{_ratio_tag(ratio)}{suffix}.pt"


def data_key(n: int, metadata: dict, size: int) -> str:
    """8 hex digits naming the data a table is drawn for: the split's length and its conversion's metadata
    (seed, counts, sources...), or the file size for files without metadata (e.g. written by DCP)."""
    content = json.dumps({"n": int(n), "metadata": metadata, "size": None if metadata else int(size)},
                         sort_keys=True, default=str)
    return hashlib.sha1(content.encode("utf-8")).hexdigest()[:8]


TABLE_LOCK = ".tables.lock"
"""Lock file in a missing-tables folder (:mod:`mamol.locks`): DDP ranks, on one node or several sharing the
folder, take turns drawing a table."""


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Exclusive lock on the missing-tables folder ``root`` across processes and hosts."""
    lock = FileLock(root / TABLE_LOCK)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:  # a file in the way, no permission, a read-only file system
        raise _unwritable(root, err) from err
    try:
        yield
    finally:
        lock.release()


def table_params(n: int, modalities: Sequence[str], setting: MissingSetting) -> dict:
    """The parameters that determine a table (irrelevant ones set to None, so they never cause a mismatch)."""
    modalities = tuple(modalities)
    kind = parse_missing_type(setting.type, modalities)
    is_pair = kind not in ("none", "both", "_".join(modalities)) and kind not in modalities
    return {
        "format_version": TABLE_FORMAT_VERSION,
        "n": int(n),
        "modalities": list(modalities),
        "missing_type": kind,
        "missing_ratio": None if kind == "none" else float(setting.ratio),
        "both_ratio": float(setting.both_ratio) if kind == "both" else None,
        "missing_ratio_2": float(setting.ratio_2) if is_pair else None,
        "seed": int(setting.seed),
    }


def _unwritable(root: Path, err: OSError) -> ConfigError:
    return ConfigError(f"missing tables folder {root} cannot be written ({type(err).__name__}: {err.strerror or err}); "
                       f"expected a writable folder: set missing_table_root=<folder> (default: "
                       f"<data_root>/missing_tables)")


def _save_table(path: Path, table: Tensor, params: dict) -> None:
    try:
        with atomic_write(path, "wb") as fh:
            torch.save({"table": table.clone(), "params": params}, fh)
    except OSError as err:
        raise _unwritable(path.parent, err) from err


def _read_table(path: Path) -> tuple[Tensor | None, dict | None, str]:
    """(table, params, problem) of a stored table file; problem is '' when it reads fine."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is reported, never silently used
        return None, None, f"cannot be read ({type(err).__name__}: {err})"
    if not isinstance(obj, dict) or "table" not in obj or "params" not in obj:
        return None, None, "is not a missing table saved by mamol (no 'table'/'params' entries)"
    table, params = obj["table"], obj["params"]
    if not isinstance(table, Tensor) or table.ndim != 1 or not isinstance(params, dict):
        return None, None, "holds a malformed table"
    return table.long(), params, ""


def load_or_make_missing_table(
    root: str | os.PathLike,
    arrow_name: str,
    n: int,
    modalities: Sequence[str],
    setting: MissingSetting,
    on_mismatch: str = "regenerate",
    key: str = "",
) -> Tensor:
    """Load the stored table for these parameters, or draw and save it (atomically) when absent.

    ``key`` (:func:`data_key`) is part of the file name, so tables of different conversions never collide.
    Processes asking at once (DDP ranks) take turns: the first draws and writes, the others read it. A
    stored table made with other parameters (or another length, or unreadable) is regenerated with a logged
    warning (``on_mismatch="regenerate"``) or refused with a DataError naming the file and each mismatching
    parameter (``on_mismatch="refuse"``).
    """
    if on_mismatch not in ("regenerate", "refuse"):
        raise ValueError(f"on_mismatch must be 'regenerate' or 'refuse', got {on_mismatch!r}")
    params = table_params(n, modalities, setting)
    path = missing_table_path(root, arrow_name, params["missing_type"], setting.ratio, key)
    with _folder_lock(path.parent):
        return _load_or_make(path, n, modalities, setting, params, on_mismatch)


def _load_or_make(path: Path, n: int, modalities: Sequence[str], setting: MissingSetting, params: dict,
                  on_mismatch: str) -> Tensor:
    if path.exists():
        table, stored, problem = _read_table(path)
        if not problem:
            diffs = [
                f"{key}: stored {stored.get(key)!r}, requested {value!r}"
                for key, value in params.items()
                if stored.get(key) != value
            ]
            if not diffs and len(table) != n:
                diffs = [f"table length: stored {len(table)}, requested {n}"]
            if not diffs and not bool(((table >= 0) & (table < 2 ** len(params["modalities"]) - 1)).all()):
                diffs = ["codes: stored table holds codes outside 0 .. 2**M - 2"]
            if not diffs:
                logger.debug("missing table %s reused", path)
                return table
            problem = "was made with other parameters (" + "; ".join(diffs) + ")"
        if on_mismatch == "refuse":
            raise DataError(
                f"missing table {path} {problem}; delete it, or allow regeneration "
                f"(on_mismatch='regenerate'), or point missing_table_root elsewhere"
            )
        logger.warning("missing table %s %s: regenerating it", path, problem)
    table = make_missing_table(n, modalities, setting)
    _save_table(path, table, params)
    logger.info("missing table %s written (%s)", path, params)
    return table


def describe_table(table: Tensor, modalities: Sequence[str]) -> dict[str, int]:
    """Counts per pattern, keyed 'complete' or '+'.join(missing names) (for logs and tests)."""
    counts = torch.bincount(table.long(), minlength=2 ** len(modalities) - 1).tolist()
    return {("+".join(missing_names(code, modalities)) or "complete"): int(c) for code, c in enumerate(counts)}
