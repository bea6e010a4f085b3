"""Reading MATLAB ``.mat`` files: v5/v7 through scipy, v7.3 (HDF5) through h5py, and picking the variable.

A file's variable is chosen by the first known key it holds (exact spelling first, then ignoring case),
else the single variable that does not start with ``__``; several candidates and no known key is an error
that lists them. MATLAB stores arrays column-major: h5py hands v7.3 arrays over with their axes reversed,
so they are transposed back here, and every array comes out in MATLAB's H×W[×C] order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from mamol.errors import DataError, MissingFileError

logger = logging.getLogger(__name__)

_HDF5_SKIP = ("#refs#", "#subsystem#")


@dataclass(frozen=True)
class MatVariable:
    """A variable chosen in a .mat file (shape in MATLAB order, i.e. H×W[×C])."""

    path: Path
    key: str
    shape: tuple[int, ...]
    version: str  # "5" (v4/v5/v7, scipy) | "7.3" (HDF5, h5py)

    @property
    def label(self) -> str:
        return f"{self.path.name}:{self.key}"


def mat_version(path: str | os.PathLike) -> str:
    """'7.3' for an HDF5-based file, else '5' (v4/v5/v7: scipy validates it when reading)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MATLAB file {path} does not exist")
    return "7.3" if h5py.is_hdf5(path) else "5"  # anything else is checked when scipy reads it


def list_variables(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape (MATLAB order) for every non-``__`` variable of a .mat file, in file order."""
    path = Path(path)
    if mat_version(path) == "7.3":
        out: dict[str, tuple[int, ...]] = {}
        with h5py.File(path, "r") as fh:
            for name, obj in fh.items():
                if name in _HDF5_SKIP or name.startswith("__") or not isinstance(obj, h5py.Dataset):
                    continue
                out[name] = tuple(reversed(obj.shape))
        return out
    try:
        entries = scipy.io.whosmat(str(path))
    except Exception as err:  # scipy raises several types for foreign or truncated files
        raise DataError(
            f"{path} is not a readable MATLAB .mat file (v5/v7 via scipy, v7.3 via h5py): "
            f"{type(err).__name__}: {err}"
        ) from err
    return {name: tuple(shape) for name, shape, _cls in entries if not name.startswith("__")}


def resolve_variable(path: str | os.PathLike, known_keys: Sequence[str], what: str) -> MatVariable:
    """Pick the variable of ``path`` holding ``what`` (e.g. 'hsi'): a known key, else the only variable."""
    path = Path(path)
    version = mat_version(path)
    variables = list_variables(path)
    if not variables:
        raise DataError(f"{path}: holds no variables; expected {what} under one of the keys {list(known_keys)}")
    key = next((k for k in known_keys if k in variables), None)
    if key is None:
        lower = {name.lower(): name for name in variables}
        key = next((lower[k.lower()] for k in known_keys if k.lower() in lower), None)
    if key is None:
        if len(variables) > 1:
            raise DataError(
                f"{path}: none of the known keys {list(known_keys)} for {what} found and several candidate "
                f"variables {sorted(variables)}; keep one variable in the file or rename it to {known_keys[0]!r}"
            )
        key = next(iter(variables))
        logger.info("%s: no known key for %s; using its only variable %r", path, what, key)
    else:
        logger.info("%s: using key %r for %s", path, key, what)
    return MatVariable(path=path, key=key, shape=variables[key], version=version)


def read_variable(var: MatVariable) -> np.ndarray:
    """The array of ``var`` in MATLAB order (H×W[×C]); v7.3 arrays come as a transposed view (no copy)."""
    if var.version == "7.3":
        with h5py.File(var.path, "r") as fh:
            data = fh[var.key][()]
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
            raise DataError(f"{var.label}: expected a numeric array, found {type(data).__name__} "
                            f"{getattr(data, 'dtype', '')}")
        return data.T  # h5py gives the column-major axes reversed
    try:
        data = scipy.io.loadmat(str(var.path), variable_names=[var.key])[var.key]
    except Exception as err:  # truncated or corrupt payloads surface as several exception types
        raise DataError(f"{var.label}: cannot read the variable ({type(err).__name__}: {err})") from err
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
        raise DataError(f"{var.label}: expected a numeric array, found {type(data).__name__} "
                        f"{getattr(data, 'dtype', '')}")
    return data


def read_mat(path: str | os.PathLike, known_keys: Sequence[str], what: str) -> tuple[np.ndarray, MatVariable]:
    """Resolve and read the variable of ``path`` holding ``what``; returns (array, chosen variable)."""
    var = resolve_variable(path, known_keys, what)
    return read_variable(var), var
