"""BaseArrowDataset: one Arrow split + its missing table + the fill for missing inputs; DatasetEntry.

Shared by the remote and the image–text datasets. The catalogue entry (:class:`DatasetEntry`) says which
file holds a split; a subclass says how to build its :class:`TaskInfo` from the file's metadata
(:meth:`build_task_info`) and how to read one sample (:meth:`get_sample`). A split holds one sample per
Arrow row unless the subclass maps samples to rows itself (:meth:`num_samples`, :meth:`row_of`; MM-IMDb
has one sample per plot). The base class

* builds or loads the split's missing table (:mod:`mamol.missing`) for the split's missing setting, one
  entry per Arrow row (samples sharing a row share its code), stored beside the Arrow files unless
  ``missing_table_root`` says otherwise;
* opens the Arrow file memory-mapped lazily, once per process: DataLoader workers each map the same file
  and share the OS page cache, so no worker holds a copy of the data (the open table is never pickled);
* redraws the code of complete training samples on every access when ``simulate_missing`` is set;
* stacks samples into a batch dict (:meth:`collate`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mamol.data.arrow import check_one_conversion, num_rows, open_arrow, read_metadata
from mamol.errors import DataError, MissingFileError
from mamol.missing import data_key, load_or_make_missing_table, simulate_missing
from mamol.settings import DataSettings, MissingSettings
from mamol.tasks import SPLITS, TaskInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the catalogue (:mod:`mamol.data.catalogue`): everything that differs between datasets."""

    name: str  # task name and Arrow file prefix ("hatememes")
    kind: str  # "remote" | "natural"
    task_type: str  # decides loss and metrics (mamol.tasks)
    dataset: type[BaseArrowDataset]  # the Dataset class serving its splits
    split_files: dict[str, str]  # split -> file tag: <name>_<tag>.arrow
    modalities: tuple[str, ...] | None = None  # code order; None = read from the files (remote scenes)
    aliases: tuple[str, ...] = ()  # other spellings accepted for the name ("hateful_memes")
    # Image-text datasets: the config key <name>_class_num and the task_finetune_<name> named config come from
    # these (mamol.experiment). Its converter is registered in mamol.conversion.converters.
    title: str = ""  # the name in prose ("Hateful Memes")
    class_num: int = 0  # default head size (DCP's <name>_class_num key)
    class_doc: str = ""  # what the head's outputs are, for the key's meaning
    val_check_interval: float = 0.2  # DCP's validation cadence when fine-tuning on this dataset (epochs)

    def arrow_stem(self, split: str) -> str:
        """File stem of a split, e.g. ``houston2013_train`` or ``mmimdb_dev``."""
        return f"{self.name}_{self.split_files[split]}"

    def arrow_path(self, root: Path, split: str) -> Path:
        """Path of the split's Arrow file in ``root``; MissingFileError listing what was expected when absent."""
        path = Path(root) / f"{self.arrow_stem(split)}.arrow"
        if not path.is_file():
            raise missing_arrow_error(Path(root), self.name, [f"{self.arrow_stem(s)}.arrow" for s in SPLITS])
        return path


def missing_arrow_error(data_root: Path, name: str, expected: list[str]) -> MissingFileError:
    """An error listing the files expected for ``name`` and the Arrow files ``data_root`` holds."""
    if not data_root.is_dir():
        return MissingFileError(
            f"data_root {data_root} does not exist; expected a folder holding {', '.join(expected)} "
            f"(make them with datasets/make_arrow.py)"
        )
    found = sorted(p.name for p in data_root.glob("*.arrow"))
    return MissingFileError(
        f"no Arrow data for dataset {name!r} in data_root {data_root}: expected {', '.join(expected)}; "
        f"found {', '.join(found) if found else 'no .arrow files'} (make them with datasets/make_arrow.py)"
    )


class BaseArrowDataset(Dataset):
    """One split of one dataset stored as an Arrow file; samples are dicts with fixed keys."""

    def __init__(self, entry: DatasetEntry, data: DataSettings, missing: MissingSettings, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.entry, self.data, self.split = entry, data, split
        self.name = entry.name
        self.path = entry.arrow_path(data.root, split)
        self.info = self.task_info(entry, data)
        self.modalities = self.info.modalities
        self.metadata = read_metadata(self.path)
        check_one_conversion(self.conversion_paths())  # never splits of two conversions (e.g. one interrupted)
        self.missing_fill = missing.fill
        self.simulate = missing.simulate and split == "train"
        self.missing_seed = missing.split(split).seed
        self._n = num_rows(self.path)
        self.missing = missing.split(split)
        table_root = missing.table_root if missing.table_root is not None else data.root / "missing_tables"
        key = data_key(self._n, self.metadata, self.path.stat().st_size)  # tables of other conversions never collide
        self.missing_table = load_or_make_missing_table(table_root, entry.arrow_stem(split), self._n, self.modalities,
                                                        self.missing, missing.on_mismatch, key)  # (N,)
        self._table: pa.Table | None = None
        self._pid: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    def conversion_paths(self) -> list[Path]:
        """The files of this dataset's conversion present in ``data_root``: every split file (remote: and the
        scene file), which must carry one conversion id."""
        paths = [self.data.root / f"{self.entry.arrow_stem(s)}.arrow" for s in SPLITS]
        return [p for p in paths if p.is_file()]

    # ---------------------------------------------------------------- task description
    @classmethod
    def task_info(cls, entry: DatasetEntry, data: DataSettings) -> TaskInfo:
        """TaskInfo of ``entry`` from the train file's schema metadata (cheap: no data is read)."""
        return cls.build_task_info(entry, data, read_metadata(entry.arrow_path(data.root, "train")))

    @classmethod
    def build_task_info(cls, entry: DatasetEntry, data: DataSettings, metadata: dict) -> TaskInfo:
        """Subclasses: TaskInfo from the stored metadata and the settings (e.g. selected modalities)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- lazy per-process open
    @property
    def table(self) -> pa.Table:
        """The split's table, memory-mapped; opened on first use in each process (worker)."""
        if self._table is None or self._pid != os.getpid():
            self._table = open_arrow(self.path)
            self._pid = os.getpid()
            if self._table.num_rows != self._n:
                raise DataError(f"{self.path}: holds {self._table.num_rows} rows, expected {self._n}")
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
            seed = np.random.SeedSequence([self.missing_seed, torch.initial_seed() % 2**63])
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
