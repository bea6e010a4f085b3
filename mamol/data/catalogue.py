"""The dataset catalogue: one :class:`~mamol.data.base.DatasetEntry` per dataset, and name lookups.

Adding an image–text dataset is one file here (``mamol/data/<name>.py`` with its Dataset class and its
``ENTRY``, which also declares its head size and fine-tuning cadence) plus its ``ENTRY`` in :data:`NATURAL`
(the config key ``<name>_class_num`` and the named config ``task_finetune_<name>`` follow from the entry), and
its converter on the writing side (``mamol/conversion/<name>.py``, registered in
:mod:`mamol.conversion.converters`, which also declares its ``datasets/make_arrow.py`` options); adding a known
remote scene is one entry in :data:`mamol.data.scenes.KNOWN_SCENES` (its entry here is derived). Any other name
is a custom remote scene, recognised by the metadata of its ``<name>_train.arrow``.

The training side never imports the conversion package (STYLE 12, 14): converters import this catalogue, not the
reverse.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mamol.data import food101, hateful_memes, mmimdb
from mamol.data.arrow import read_metadata
from mamol.data.base import DatasetEntry, missing_arrow_error
from mamol.data.remote import RemoteDataset
from mamol.data.scenes import KNOWN_SCENES
from mamol.errors import ConfigError, DataError
from mamol.tasks import REMOTE, SPLITS

REMOTE_SPLIT_FILES = {split: split for split in SPLITS}


def remote_entry(name: str) -> DatasetEntry:
    """The entry of remote scene ``name`` (known or custom)."""
    return DatasetEntry(name=name, kind="remote", task_type=REMOTE, dataset=RemoteDataset,
                        split_files=REMOTE_SPLIT_FILES, aliases=("houston",) if name == "houston2013" else ())


NATURAL: tuple[DatasetEntry, ...] = (mmimdb.ENTRY, food101.ENTRY, hateful_memes.ENTRY)
"""The image–text datasets, each declared in its own file."""

CATALOGUE: dict[str, DatasetEntry] = {
    **{e.name: e for e in NATURAL},
    **{name: remote_entry(name) for name in KNOWN_SCENES},
}
"""Every known dataset by its task name (the Arrow file prefix)."""

_ALIASES = {alias: entry.name for entry in CATALOGUE.values() for alias in entry.aliases}


def natural_entries() -> tuple[DatasetEntry, ...]:
    """The image–text datasets of the catalogue, in their order."""
    return NATURAL


def canonical_name(name: str) -> str:
    """Catalogue name for a user-facing dataset name (``hateful_memes`` -> ``hatememes``, case-insensitive)."""
    low = str(name).strip().lower()
    return _ALIASES.get(low, low)


def canonical_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The ``datasets`` config value as canonical names; ConfigError when empty or repeated."""
    names = [value] if isinstance(value, str) else list(value or [])
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"datasets={value!r}: name at least one dataset, e.g. datasets='[\"houston2013\"]'")
    canonical = tuple(canonical_name(n) for n in names)
    if len(set(canonical)) != len(canonical):
        raise ConfigError(f"datasets={list(names)} names a dataset twice")
    return canonical


def entry(name: str, data_root: str | Path | None) -> DatasetEntry:
    """The entry serving ``name``: from the catalogue, else a custom remote scene if its train file is one."""
    name = canonical_name(name)
    if name in CATALOGUE:
        return CATALOGUE[name]
    if not data_root:
        raise ConfigError("data_root is empty: set data_root=<folder with the Arrow files>")
    train = Path(data_root) / f"{name}_train.arrow"
    if not train.is_file():
        raise missing_arrow_error(Path(data_root), name, [f"{name}_{s}.arrow" for s in SPLITS])
    kind = read_metadata(train).get("kind")
    if kind != "remote":
        raise DataError(f"dataset {name!r} is not in the catalogue and {train} is not a remote scene file "
                        f"(metadata kind={kind!r}, expected 'remote'); known datasets: {sorted(CATALOGUE)}")
    return remote_entry(name)


def kind_of(names: Sequence[str], data_root: str | Path | None) -> str:
    """The one data kind of ``names``; ConfigError when a run mixes remote scenes and image–text tasks."""
    kinds = {entry(n, data_root).kind for n in names}
    if len(kinds) != 1:
        raise ConfigError(f"datasets={list(names)} mixes remote scenes and image-text tasks; train them separately")
    return kinds.pop()
