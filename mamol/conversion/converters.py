"""The converters, registered by dataset name: what ``datasets/make_arrow.py --dataset NAME`` runs.

Each image–text dataset registers its converter (``mamol/conversion/<name>.py``) and the keyword options it
takes beyond ``(root, target, progress)`` (the CLI offers them for that dataset only); every other name is a
remote scene, known (:data:`mamol.data.scenes.KNOWN_SCENES`) or custom, converted by
:func:`mamol.conversion.remote.prepare_remote`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mamol.conversion import food101, hateful_memes, mmimdb
from mamol.conversion.remote import prepare_remote
from mamol.data import catalogue

__all__ = ["NATURAL_CONVERTERS", "Converter", "converter"]


@dataclass(frozen=True)
class Converter:
    """How one dataset's raw data becomes its Arrow files."""

    name: str  # the catalogue name (Arrow file prefix)
    kind: str  # "remote" | "natural"
    convert: Callable[..., dict[str, Path] | list[Path]]  # convert(root, target, progress=..., **options)
    options: tuple[str, ...] = ()  # keyword options of ``convert`` beyond (root, target, progress)


NATURAL_CONVERTERS: dict[str, Converter] = {
    "mmimdb": Converter("mmimdb", "natural", mmimdb.prepare_mmimdb, ("split_file",)),
    "food101": Converter("food101", "natural", food101.prepare_food101,
                         ("split_file", "class_idx_file", "allow_missing_text")),
    "hatememes": Converter("hatememes", "natural", hateful_memes.prepare_hateful_memes, ("allow_missing_test",)),
}
"""The image–text converters, in the catalogue's order (checked against it in the tests)."""


def converter(name: str) -> Converter:
    """The converter of dataset ``name`` (any spelling the catalogue accepts; other names: a remote scene)."""
    name = catalogue.canonical_name(name)
    if name in NATURAL_CONVERTERS:
        return NATURAL_CONVERTERS[name]
    return Converter(name, "remote", functools.partial(prepare_remote, name))
