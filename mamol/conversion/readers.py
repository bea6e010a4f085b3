"""One reading interface over a scene folder's files, whichever format holds a role: ``.mat``
(:mod:`mamol.conversion.matfile`) or a GeoTIFF / ENVI raster (:mod:`mamol.conversion.rasters`).

Each gives a *variable* (path, shape H×W[×C], ``label`` for messages), its whole array in H×W[×C] order and its
bands one at a time; the converter calls only these functions, so both formats give the same Arrow columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mamol.conversion.layout import RASTER_SUFFIXES, ROLE_KEYS
from mamol.conversion.matfile import MatVariable, iter_bands, read_variable, resolve_variable
from mamol.conversion.rasters import RasterVariable, iter_raster_bands, open_raster, read_raster

__all__ = ["Variable", "bands", "describe", "read_array", "resolve"]

Variable = MatVariable | RasterVariable
"""A scene file's data chosen for one role."""

_WHAT = {"label": "label raster", "train": "train split raster", "test": "test split raster"}


def resolve(path: str | Path, role: str) -> Variable:
    """The variable of ``path`` holding ``role`` (a raster by its suffix, else a .mat variable by its key)."""
    path = Path(path)
    if path.suffix.lower() in RASTER_SUFFIXES:
        return open_raster(path, role)
    return resolve_variable(path, ROLE_KEYS[role], _WHAT.get(role, role))


def read_array(var: Variable) -> np.ndarray:
    """The whole array of ``var`` in H×W[×C] order."""
    return read_raster(var) if isinstance(var, RasterVariable) else read_variable(var)


def bands(var: Variable) -> Iterator[np.ndarray]:
    """The H×W bands of ``var`` one at a time, each a fresh array."""
    return iter_raster_bands(var) if isinstance(var, RasterVariable) else iter_bands(var)


def describe(var: Variable) -> dict:
    """What the Arrow metadata's ``source`` records of ``var``'s file."""
    if isinstance(var, RasterVariable):
        return var.describe()
    return {"file": var.path.name, "key": var.key, "bytes": var.path.stat().st_size, "shape": list(var.shape),
            "mat_version": var.version}
