"""Reading MATLAB ``.mat`` files: v5/v7 through scipy, v7.3 (HDF5) through h5py, and picking the variable.

A file's variable is chosen by the first known key it holds (exact spelling first, then ignoring case),
else the single variable that does not start with ``__``; several candidates and no known key is an error
that lists them. MATLAB stores arrays column-major: h5py hands v7.3 arrays over with their axes reversed,
so they are transposed back here, and every array comes out in MATLAB's H×W[×C] order.

:func:`iter_bands` reads a cube one H×W band at a time (v7.3 through h5py slicing; v5/v7 numeric arrays,
compressed or not, from their data element), so a converter never holds a whole cube it is about to copy.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
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

    @property
    def where(self) -> str:
        """The file and variable, for messages about its values."""
        return f"{self.path}: variable {self.key!r}"


def mat_version(path: str | os.PathLike) -> str:
    """'7.3' for an HDF5-based file, else '5' (v4/v5/v7: scipy validates it when reading)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MATLAB file {path} does not exist")
    return "7.3" if h5py.is_hdf5(path) else "5"  # anything else is checked when scipy reads it


_MI_BYTES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}  # numeric data types -> bytes per value
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_NUMERIC_CLASSES = range(6, 16)  # mxDOUBLE_CLASS .. mxUINT64_CLASS
_MX_COMPLEX_FLAG, _MX_LOGICAL_FLAG = 0x0800, 0x0200  # array flags read whole by scipy


def _tag(data: mmap.mmap, pos: int, end: int, endian: str, path: Path) -> tuple[int, int, int]:
    """(data type, byte count, offset of the data) of the element tag at ``pos`` (small format included)."""
    if pos + 8 > end:
        raise DataError(f"{path}: a data element at byte {pos} is cut off (the file or its variable ends at byte "
                        f"{end}): truncated?")
    word, count = struct.unpack(endian + "II", data[pos:pos + 8])
    if word >> 16:  # small data element: type and count in one word, the data in the next 4 bytes
        return word & 0xFFFF, word >> 16, pos + 4
    return word, count, pos + 8


def check_v5_structure(path: str | os.PathLike) -> None:
    """Walk the element tags of a MATLAB v5/v7 file and refuse a truncated or corrupt one by name.

    scipy checks much of a file itself, but an unknown data type in an uncompressed variable crashes its reader
    (a segmentation fault, no message), so the numeric variables' data tags are checked here first: a known
    type, and as many values as the dimensions declare. Compressed variables are checked by zlib.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if handle.read(6) != b"MATLAB":
            return  # not a v5 file (e.g. v4, or not MATLAB at all): scipy tells
        if size < 128:
            raise DataError(f"{path}: {size} bytes, shorter than the 128-byte MATLAB header (truncated?)")
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    with data:
        if data[126:128] not in (b"IM", b"MI"):
            raise DataError(f"{path}: no endian indicator ('IM' or 'MI') at bytes 126-127 of the MATLAB header "
                            f"(corrupt file?)")
        endian = "<" if data[126:128] == b"IM" else ">"
        pos = 128
        try:
            while pos < size:
                kind, count, start = _tag(data, pos, size, endian, path)
                if start + count > size:
                    raise DataError(f"{path}: a variable at byte {pos} declares {count} bytes but the file ends at "
                                    f"byte {size} (truncated?)")
                if kind == _MI_MATRIX:
                    _check_matrix(data, start, start + count, endian, path)
                pos = start + count if kind == _MI_COMPRESSED else start + count + (-count % 8)
        except (struct.error, ValueError, OverflowError) as err:
            raise DataError(f"{path}: the data element at byte {pos} is malformed ({err}); corrupt file?") from err


def _check_matrix(data: mmap.mmap, pos: int, end: int, endian: str, path: Path) -> None:
    """Array flags, dimensions, name, then (numeric classes) the real part's type and value count."""
    parts = []
    for _ in range(4):
        kind, count, start = _tag(data, pos, end, endian, path)
        if start + count > end:
            raise DataError(f"{path}: an element of a variable at byte {pos} overruns it (corrupt file?)")
        parts.append((kind, count, start))
        pos = start + count + (-count % 8) if start == pos + 8 else pos + 8
    (_, _, flags_at), (_, dims_count, dims_at), (_, name_count, name_at), (kind, count, _) = parts
    mx_class = struct.unpack(endian + "I", data[flags_at:flags_at + 4])[0] & 0xFF
    if mx_class not in _NUMERIC_CLASSES:
        return
    dims = struct.unpack(endian + f"{dims_count // 4}i", data[dims_at:dims_at + dims_count])
    name = bytes(data[name_at:name_at + name_count]).decode("latin-1")
    values = math.prod(dims)
    if kind not in _MI_BYTES or count != values * _MI_BYTES[kind]:
        raise DataError(f"{path}: variable {name!r} declares {'x'.join(map(str, dims))} values but its data element "
                        f"holds {count} bytes of type {kind} (corrupt file?)")


def list_variables(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape (MATLAB order) for every non-``__`` variable of a .mat file, in file order."""
    path = Path(path)
    if mat_version(path) == "7.3":
        out: dict[str, tuple[int, ...]] = {}
        try:
            with h5py.File(path, "r") as fh:
                for name, obj in fh.items():
                    if name in _HDF5_SKIP or name.startswith("__") or not isinstance(obj, h5py.Dataset):
                        continue
                    out[name] = tuple(reversed(obj.shape))
        except OSError as err:  # h5py reports truncated or corrupt HDF5 files as OSError
            raise DataError(f"{path} is not a readable MATLAB v7.3 (HDF5) file: {err}") from err
        return out
    check_v5_structure(path)
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
        try:
            with h5py.File(var.path, "r") as fh:
                data = fh[var.key][()]
        except OSError as err:
            raise DataError(f"{var.label}: cannot read the variable (HDF5: {err}); truncated or corrupt?") from err
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


def iter_bands(var: MatVariable) -> Iterator[np.ndarray]:
    """The H×W bands of ``var`` (H×W: one band; H×W×C: C bands) one at a time, each a fresh writeable array.

    Values and dtype are those of :func:`read_variable` (each band as ``read_variable(var)[..., c]``), but
    v7.3 files and v5/v7 real numeric arrays are read band by band, so only one band is in memory at a time;
    anything else (e.g. complex or sparse) is read whole through :func:`read_variable` and sliced.
    """
    if var.version == "7.3":
        yield from _hdf5_bands(var)
        return
    found = _find_v5_array(var)
    if found is None:
        data = read_variable(var)
        yield from (data,) if data.ndim == 2 else (data[..., c] for c in range(data.shape[2]))
        return
    with open(var.path, "rb") as handle:
        stream = _v5_stream(handle, found.start, found.size, found.compressed, var.label)
        _matrix_header(stream, found.endian, var.label)  # skip to the real part's values
        h, w = found.dims[0], found.dims[1]
        for _ in range(found.dims[2] if len(found.dims) == 3 else 1):
            band = np.empty((w, h), found.dtype)  # column-major H×W band = C-order W×H
            if stream.readinto(memoryview(band).cast("B")) != band.nbytes:
                raise DataError(f"{var.label}: the variable's data ends early (truncated or corrupt file?)")
            yield band.T


def _hdf5_bands(var: MatVariable) -> Iterator[np.ndarray]:
    try:
        with h5py.File(var.path, "r") as fh:
            dataset = fh[var.key]  # (C, W, H) or (W, H): MATLAB's axes reversed
            if dataset.dtype.kind not in "biuf":
                raise DataError(f"{var.label}: expected a numeric array, found ndarray {dataset.dtype}")
            if dataset.ndim == 2:
                yield dataset[()].T
                return
            for c in range(dataset.shape[0]):
                yield dataset[c].T
    except OSError as err:
        raise DataError(f"{var.label}: cannot read the variable (HDF5: {err}); truncated or corrupt?") from err


@dataclass(frozen=True)
class _V5Array:
    """Where a real numeric v5/v7 variable lies: its top-level element and the layout of its values."""

    start: int  # offset of the element's data (after its tag)
    size: int  # bytes of the element's data
    compressed: bool
    endian: str
    dims: tuple[int, ...]
    dtype: np.dtype


class _Inflater:
    """``readinto`` over a zlib-compressed span of a file, decompressing only as much as is asked for."""

    CHUNK = 1 << 20

    def __init__(self, handle, size: int) -> None:
        self._handle, self._left, self._zlib = handle, size, zlib.decompressobj()

    def readinto(self, buffer: memoryview) -> int:
        filled = 0
        while filled < len(buffer):
            data = self._zlib.unconsumed_tail
            if not data:
                data = self._handle.read(min(self.CHUNK, self._left))
                self._left -= len(data)
                if not data:
                    break
            out = self._zlib.decompress(data, len(buffer) - filled)
            buffer[filled:filled + len(out)] = out
            filled += len(out)
        return filled


def _v5_stream(handle, start: int, size: int, compressed: bool, where: str):
    """A ``readinto`` stream over the miMATRIX body of the top-level element whose data is at ``start``."""
    handle.seek(start)
    if not compressed:
        return handle
    stream = _Inflater(handle, size)
    _read_exact(stream, 8, where)  # the inner miMATRIX tag
    return stream


def _read_exact(stream, n: int, where: str) -> bytes:
    buffer = bytearray(n)
    if stream.readinto(memoryview(buffer)) != n:
        raise DataError(f"{where}: a variable ends early (truncated or corrupt file?)")
    return bytes(buffer)


def _matrix_header(stream, endian: str, where: str) -> tuple[int, int, tuple[int, ...], str, int, int]:
    """(mx class, array flags, dims, name, real part's data type, its byte count) of a miMATRIX body.

    Leaves ``stream`` at the first byte of the real part's values; its type and count are 0 when it is a
    small data element (at most 4 bytes of values).
    """
    parts = []
    for i in range(4):
        tag = _read_exact(stream, 8, where)
        word, count = struct.unpack(endian + "II", tag)
        if word >> 16:  # small data element: type and count in one word, the data in the next 4 bytes
            parts.append((word & 0xFFFF, word >> 16, tag[4:4 + (word >> 16)]))
        elif i < 3:
            parts.append((word, count, _read_exact(stream, count + (-count % 8), where)[:count]))
        else:
            parts.append((word, count, b""))
    (_, _, flags), (_, dims_count, dims), (_, _, name), (kind, count, small) = parts
    flags_word = struct.unpack(endian + "I", flags[:4])[0]
    dims_tuple = struct.unpack(endian + f"{dims_count // 4}i", dims)
    if small:
        kind, count = 0, 0
    return flags_word & 0xFF, flags_word, dims_tuple, name.decode("latin-1"), kind, count


def _find_v5_array(var: MatVariable) -> _V5Array | None:
    """Locate ``var`` when it is a real numeric array whose values can be read in place; else None."""
    with open(var.path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(126)
        endian = "<" if handle.read(2) == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            handle.seek(pos)
            kind, count = struct.unpack(endian + "II", handle.read(8))
            start = pos + 8
            pos = start + count if kind == _MI_COMPRESSED else start + count + (-count % 8)
            if kind not in (_MI_MATRIX, _MI_COMPRESSED):
                continue
            try:
                stream = _v5_stream(handle, start, count, kind == _MI_COMPRESSED, var.label)
                mx_class, flags, dims, name, mi_type, n_bytes = _matrix_header(stream, endian, var.label)
            except (DataError, struct.error, zlib.error):
                return None  # unusual layout: leave it to scipy
            if name != var.key:
                continue
            whole_only = flags & (_MX_COMPLEX_FLAG | _MX_LOGICAL_FLAG)
            if mx_class not in _NUMERIC_CLASSES or whole_only or mi_type not in _MI_DTYPES or len(dims) not in (2, 3):
                return None
            dtype = np.dtype(_MI_DTYPES[mi_type]).newbyteorder(endian)
            if n_bytes != math.prod(dims) * dtype.itemsize:
                return None
            return _V5Array(start, count, kind == _MI_COMPRESSED, endian, dims, dtype)
    return None


def read_mat(path: str | os.PathLike, known_keys: Sequence[str], what: str) -> tuple[np.ndarray, MatVariable]:
    """Resolve and read the variable of ``path`` holding ``what``; returns (array, chosen variable)."""
    var = resolve_variable(path, known_keys, what)
    return read_variable(var), var
