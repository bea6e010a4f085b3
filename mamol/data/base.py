"""BaseArrowDataset: one Arrow split + its missing table + the fill for missing inputs.

Shared by the remote and the natural datasets. A subclass says which file holds a split
(:attr:`split_files`), how to build its :class:`TaskInfo` from the file's metadata
(:meth:`build_task_info`), and how to read one sample (:meth:`get_sample`). A split holds one sample per
Arrow row unless the subclass maps samples to rows itself (:meth:`num_samples`, :meth:`row_of`; MM-IMDb
has one sample per plot). The base class

* reads ``data_root`` and the ``missing_*`` keys of the config (``test_ratio`` / ``test_type`` override the
  val and test settings), and builds or loads the split's missing table (:mod:`mamol.missing`), one entry
  per Arrow row: samples sharing a row share its code;
* opens the Arrow file memory-mapped lazily, once per process: DataLoader workers each map the same file
  and share the OS page cache, so no worker holds a copy of the data (the open table is never pickled);
* redraws the code of complete training samples on every access when ``simulate_missing`` is set;
* stacks samples into a batch dict (:meth:`collate`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mamol.data.arrow import num_rows, open_arrow, read_metadata
from mamol.data.datamodule import TaskInfo
from mamol.missing import load_or_make_missing_table, simulate_missing

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MISSING_FILLS = ("ones", "zeros")


def missing_arrow_error(data_root: Path, name: str, expected: list[str]) -> FileNotFoundError:
    """A FileNotFoundError listing the files expected for ``name`` and the Arrow files ``data_root`` holds."""
    if not data_root.is_dir():
        return FileNotFoundError(
            f"data_root {data_root} does not exist; expected a folder holding {', '.join(expected)} "
            f"(make them with datasets/make_arrow.py)"
        )
    found = sorted(p.name for p in data_root.glob("*.arrow"))
    return FileNotFoundError(
        f"no Arrow data for dataset {name!r} in data_root {data_root}: expected {', '.join(expected)}; "
        f"found {', '.join(found) if found else 'no .arrow files'} (make them with datasets/make_arrow.py)"
    )


class BaseArrowDataset(Dataset):
    """One split of one dataset stored as an Arrow file; samples are dicts with fixed keys."""

    kind: ClassVar[str] = ""  # "remote" | "natural"
    split_files: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test"}  # split -> file tag

    def __init__(self, cfg: dict, name: str, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.cfg = cfg
        self.name = name
        self.split = split
        self.data_root = Path(cfg["data_root"])
        self.path = self.arrow_path(cfg, name, split)
        self.info = self.task_info(cfg, name)
        self.modalities = self.info.modalities
        self.metadata = read_metadata(self.path)
        self.missing_fill = cfg.get("missing_fill", "ones")
        if self.missing_fill not in MISSING_FILLS:
            raise ValueError(f"missing_fill must be one of {MISSING_FILLS}, got {self.missing_fill!r}")
        self.simulate = bool(cfg.get("simulate_missing", False)) and split == "train"
        self._n = num_rows(self.path)
        self.missing_ratio, self.missing_type = self.missing_setting(cfg, split)
        self.missing_table = load_or_make_missing_table(
            cfg.get("missing_table_root"),
            self.arrow_stem(name, split),
            self._n,
            self.modalities,
            self.missing_ratio,
            self.missing_type,
            both_ratio=float(cfg.get("both_ratio", 0.5) if cfg.get("both_ratio") is not None else 0.5),
            missing_ratio_2=float(cfg.get("missing_ratio_2") or 0.0),
            seed=int(cfg.get("missing_seed") or 0),
            on_mismatch=cfg.get("missing_table_on_mismatch") or "regenerate",
        )  # (N,) int64
        self._table: pa.Table | None = None
        self._pid: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    # ---------------------------------------------------------------- files and metadata
    @classmethod
    def arrow_stem(cls, name: str, split: str) -> str:
        """File stem of a split, e.g. ``houston2013_train`` or ``mmimdb_dev``."""
        return f"{name}_{cls.split_files[split]}"

    @classmethod
    def arrow_path(cls, cfg: dict, name: str, split: str) -> Path:
        """Path of the split's Arrow file; FileNotFoundError listing what was expected when absent."""
        root = Path(cfg["data_root"])
        path = root / f"{cls.arrow_stem(name, split)}.arrow"
        if not path.is_file():
            expected = [f"{cls.arrow_stem(name, s)}.arrow" for s in SPLITS]
            raise missing_arrow_error(root, name, expected)
        return path

    @classmethod
    def task_info(cls, cfg: dict, name: str) -> TaskInfo:
        """TaskInfo of ``name`` from the train file's schema metadata (cheap: no data is read)."""
        return cls.build_task_info(cfg, name, read_metadata(cls.arrow_path(cfg, name, "train")))

    @classmethod
    def build_task_info(cls, cfg: dict, name: str, metadata: dict) -> TaskInfo:
        """Subclasses: TaskInfo from the stored metadata and the config (e.g. selected modalities)."""
        raise NotImplementedError

    @staticmethod
    def missing_setting(cfg: dict, split: str) -> tuple[float, str]:
        """(missing_ratio, missing_type) of ``split``; ``test_ratio``/``test_type`` override val and test."""
        ratios = cfg.get("missing_ratio") or {}
        types = cfg.get("missing_type") or {}
        ratio = ratios.get(split, 0.0) if isinstance(ratios, dict) else ratios
        kind = types.get(split, "none") if isinstance(types, dict) else types
        if split in ("val", "test"):
            if cfg.get("test_ratio") is not None:
                ratio = cfg["test_ratio"]
            if cfg.get("test_type") is not None:
                kind = cfg["test_type"]
        ratio = float(ratio if ratio is not None else 0.0)
        if ratio == 0.0 and not float(cfg.get("missing_ratio_2") or 0.0):
            kind = "none"  # nothing goes missing, whatever the type says (e.g. 'both' on 3 modalities)
        return ratio, str(kind if kind is not None else "none")

    # ---------------------------------------------------------------- lazy per-process open
    @property
    def table(self) -> pa.Table:
        """The split's table, memory-mapped; opened on first use in each process (worker)."""
        if self._table is None or self._pid != os.getpid():
            self._table = open_arrow(self.path)
            self._pid = os.getpid()
            if self._table.num_rows != self._n:
                raise ValueError(f"{self.path}: holds {self._table.num_rows} rows, expected {self._n}")
            self.on_open(self._table)
        return self._table

    def on_open(self, table: pa.Table) -> None:
        """Subclasses: build per-process views of ``table`` (called once per process after opening)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_table"] = None  # never pickle the mapped data into workers: each maps the file itself
        state["_pid"] = None
        state["_rng"] = None
        state["_rng_pid"] = None
        for key in self.process_state_keys():
            state[key] = None
        return state

    def process_state_keys(self) -> tuple[str, ...]:
        """Subclasses: attribute names holding views of the open table (dropped when pickled)."""
        return ()

    # ---------------------------------------------------------------- samples
    def num_samples(self) -> int:
        """Samples in the split: one per Arrow row unless a subclass overrides this and :meth:`row_of`."""
        return self._n

    def row_of(self, index: int) -> tuple[int, int]:
        """(Arrow row, position within that row) of sample ``index``; one sample per row by default."""
        return index, 0

    def __len__(self) -> int:
        return self.num_samples()

    @property
    def rng(self) -> np.random.Generator:
        """Per-process generator for ``simulate_missing`` (seeded from missing_seed and torch's process seed)."""
        if self._rng is None or self._rng_pid != os.getpid():
            # torch.initial_seed() differs per worker and per epoch (Lightning seeds it), so draws differ too.
            seed = np.random.SeedSequence([int(self.cfg.get("missing_seed") or 0), torch.initial_seed() % 2**63])
            self._rng = np.random.default_rng(seed)
            self._rng_pid = os.getpid()
        return self._rng

    def sample_missing_type(self, row: int) -> int:
        """The code used for Arrow row ``row`` (the table's, or a fresh draw under ``simulate_missing``)."""
        code = int(self.missing_table[row])
        if self.simulate and code == 0:
            code = simulate_missing(len(self.modalities), self.rng)
        return code

    def fill(self, shape: tuple[int, ...]) -> Tensor:
        """Substitute for a missing input tensor: ones or zeros per ``missing_fill``."""
        return torch.ones(shape) if self.missing_fill == "ones" else torch.zeros(shape)

    def get_sample(self, index: int, missing_type: int) -> dict:
        """Subclasses: the sample dict for sample ``index`` with the modalities of ``missing_type`` filled."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.path.name} with {len(self)} samples")
        self.table  # noqa: B018 - make sure this process has the file open
        row, _ = self.row_of(index)
        code = self.sample_missing_type(row)  # the missing table has one entry per row
        sample = self.get_sample(index, code)
        sample["missing_type"] = torch.tensor(code, dtype=torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        sample["task"] = self.name
        return sample

    def collate(self, samples: list[dict]) -> dict:
        """Stack samples into a batch dict: tensors stacked (B, ...), strings listed, ``task`` one string."""
        return collate_samples(samples)


def collate_samples(samples: list[dict]) -> dict:
    """Batch dict from sample dicts: tensors stacked (B, ...), other values listed, ``task`` kept as one str."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "task":
            tasks = set(values)
            if len(tasks) != 1:
                raise ValueError(f"a batch mixes tasks {sorted(tasks)}; batches must hold one task")
            batch[key] = values[0]
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
