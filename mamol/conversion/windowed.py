"""Reading a large scene modality in windows, so the conversion's memory stays well below the cube's size.

The in-memory path (:func:`mamol.conversion.remote.read_padded`) holds a modality's whole padded, normalised
float32 cube. For a GeoTIFF / ENVI raster on its own grid, :func:`read_padded` here makes the same cube on disk
instead, in two passes over the file:

1. statistics, band by band: every band goes through the same :class:`~mamol.conversion.normalise.BandNormaliser`
   as in memory (same NaN/Inf policy, same statistics to the last bit), and is then dropped;
2. the cube, a window of rows at a time (every band of about :data:`WINDOW_BYTES` of the raster): each band of the
   window is normalised as its whole band was (:meth:`BandNormaliser.apply`), padded symmetrically and appended to
   an unnamed temporary file beside the output (:class:`PaddedCube`; the system removes it when the conversion ends,
   however it ends).

The patches of the splits and the rows of ``<scene>_scene.arrow`` are then read from the cube's file a record batch
at a time (:func:`cut_patches`, :func:`padded_rows`; plain reads, not a memory map, whose touched pages, and with
large page-cache folios their neighbours, would count against the process until unmapped); so the Arrow files are
the very bytes the in-memory path writes, and the peak memory is a window, a batch and one band, not the cube.

The path is chosen per modality (:func:`chosen`): ``windowed=None`` (the default) reads a raster modality in
windows when its padded cube exceeds :data:`WINDOWED_ABOVE`; ``True`` reads every raster modality that can be
read in windows so; ``False`` reads everything in memory. A ``.mat`` file or a raster resampled onto another grid
(``--resample``) is read in memory in every case (logged as a warning when ``windowed=True``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mamol.conversion.normalise import BandNormaliser
from mamol.conversion.patches import extract_patches, pad_index
from mamol.conversion.rasters import RasterVariable, nodata_as_nan
from mamol.conversion.readers import Variable, bands
from mamol.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["GDAL_CACHE_BYTES", "WINDOWED_ABOVE", "WINDOW_BYTES", "PaddedCube", "chosen", "cut_patches",
           "padded_bytes", "padded_rows", "read_padded"]

WINDOWED_ABOVE = 2**30
"""A raster modality whose padded float32 cube is larger than this (bytes) is read in windows by default."""
WINDOW_BYTES = 64 * 2**20
"""Rows of a window in the second pass: about this many bytes of float32 values, every band (at least one row)."""
GDAL_CACHE_BYTES = 64 * 2**20
"""GDAL's block cache while reading in windows (its default, 5 % of the RAM, would hold a large part of the cube)."""


def padded_bytes(var: Variable, patch_size: int) -> int:
    """Bytes of ``var``'s padded float32 cube (H + P - 1) × (W + P - 1) × C."""
    height, width = var.shape[:2]
    n_bands = var.shape[2] if len(var.shape) == 3 else 1
    return (height + patch_size - 1) * (width + patch_size - 1) * n_bands * 4


def _why_not(var: Variable) -> str | None:
    """Why ``var`` cannot be read in windows (None: it can)."""
    if not isinstance(var, RasterVariable):
        return "a .mat file is read whole"
    if var.onto is not None:
        return "it is resampled onto the first modality's grid (--resample), which is done band by band"
    return None


def chosen(var: Variable, patch_size: int, windowed: bool | None) -> bool:
    """Whether to read ``var`` in windows: ``windowed`` True / False, or None: when its padded cube is larger
    than :data:`WINDOWED_ABOVE`."""
    if windowed is False:
        return False
    size = padded_bytes(var, patch_size)
    if windowed is None and size <= WINDOWED_ABOVE:
        return False
    reason = _why_not(var)
    if reason is not None:
        log = logger.warning if windowed else logger.info
        log("%s: read in memory (%.1f GiB padded), not in windows: %s", var.label, size / 2**30, reason)
        return False
    logger.info("%s: read in windows (%.1f GiB padded)", var.label, size / 2**30)
    return True


class PaddedCube:
    """A padded (Hp, Wp, C) float32 cube in an unnamed temporary file, written a block of rows at a time and read
    back by rows (:meth:`rows`) or patches (:meth:`patches`) with plain reads: only what is asked for is in memory.
    The file has no name (:func:`tempfile.TemporaryFile`): it goes when the cube is closed or garbage-collected, or
    the process ends."""

    def __init__(self, folder: str | os.PathLike, shape: tuple[int, int, int]) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(np.float32)
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".padded-")  # noqa: SIM115 - lives with the cube
        self._rows = 0

    def append(self, rows: np.ndarray) -> None:
        """Write the next rows (n, Wp, C) float32."""
        if rows.shape[1:] != self.shape[1:] or self._rows + len(rows) > self.shape[0]:
            raise ValueError(f"rows of shape {rows.shape} do not continue a cube {self.shape} at row {self._rows}")
        np.ascontiguousarray(rows, dtype=np.float32).tofile(self._file)
        self._rows += len(rows)

    def _read_into(self, out: np.ndarray, offset: int) -> None:
        """Fill the C-contiguous ``out`` with the file's bytes from value ``offset`` on."""
        if self._rows != self.shape[0]:
            raise ValueError(f"padded cube holds {self._rows} of its {self.shape[0]} rows")
        got = os.preadv(self._file.fileno(), [memoryview(out).cast("B")], offset * 4)
        if got != out.nbytes:
            raise OSError(f"padded cube: read {got} of {out.nbytes} bytes at value {offset}")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Padded rows [start, stop) as (n, Wp, C)."""
        stop = min(stop, self.shape[0])
        out = np.empty((stop - start, *self.shape[1:]), dtype=np.float32)
        self._file.flush()
        self._read_into(out, start * self.shape[1] * self.shape[2])
        return out

    def patches(self, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
        """(n, C, P, P) C-contiguous patches with pixel (r, c) at (P//2, P//2), as
        :func:`~mamol.conversion.patches.extract_patches` cuts them from an array: one read per patch row."""
        p, (_, wp, c) = patch_size, self.shape
        out = np.empty((len(rows), p, p, c), dtype=np.float32)  # (n, P, P, C): a patch row is contiguous on disk
        self._file.flush()
        for k, (r, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            for i in range(p):
                self._read_into(out[k, i], ((r + i) * wp + col) * c)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (n, C, P, P)

    def close(self) -> None:
        self._file.close()


def cut_patches(padded: np.ndarray | PaddedCube, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
    """(n, C, P, P) patches around pixels (rows, cols) of a padded cube in memory or on disk."""
    if isinstance(padded, PaddedCube):
        return padded.patches(rows, cols, patch_size)
    return extract_patches(padded, rows, cols, patch_size)


def padded_rows(padded: np.ndarray | PaddedCube, start: int, stop: int) -> np.ndarray:
    """Padded rows [start, stop) (n, Wp, C) of a cube in memory (a view) or on disk."""
    return padded.rows(start, stop) if isinstance(padded, PaddedCube) else padded[start:stop]


def read_padded(var: Variable, patch_size: int, normalize: str, nan: str, scratch: str | os.PathLike
                ) -> tuple[PaddedCube, dict, int]:
    """Like :func:`mamol.conversion.remote.read_padded` (same values, statistics and count of filled values), but
    the padded cube is a :class:`PaddedCube` in ``scratch`` (a folder on the output's disk), read in two passes."""
    reason = _why_not(var)
    if reason is not None:
        raise DataError(f"{var.label}: cannot be read in windows: {reason}")
    height, width = var.shape[:2]
    n_bands = var.shape[2] if len(var.shape) == 3 else 1
    rows, cols = pad_index(height, patch_size), pad_index(width, patch_size)
    normaliser = BandNormaliser(var, normalize, nan)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        for band in bands(var):  # pass 1: (H, W) each, statistics only
            normaliser(band if band.dtype == np.float32 else band.astype(np.float32))
        stats, filled = normaliser.finish()  # raises for refused NaN/Inf before anything is written
        Path(scratch).mkdir(parents=True, exist_ok=True)
        cube = PaddedCube(scratch, (len(rows), len(cols), n_bands))
        step = max(1, WINDOW_BYTES // (width * n_bands * 4))
        try:
            with rasterio.open(var.path) as src:
                for start in range(0, len(rows), step):  # pass 2: padded rows [start, start + step)
                    need = rows[start:start + step]  # source row of each padded row
                    low = int(need.min())
                    window = _read_rows(src, var, low, int(need.max()) + 1)  # (C, r, W)
                    out = np.empty((len(need), len(cols), n_bands), dtype=np.float32)  # (n, Wp, C)
                    for c in range(n_bands):
                        band = window[c].astype(np.float32)  # ours to normalise in place
                        out[..., c] = normaliser.apply(c, band)[np.ix_(need - low, cols)]
                    cube.append(out)
        except RasterioError as err:
            cube.close()
            raise DataError(f"{var.path}: cannot read its rows ({err}); truncated or corrupt?") from err
    return cube, stats, filled


def _read_rows(src: rasterio.io.DatasetReader, var: RasterVariable, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of every band of ``src`` as (C, stop - start, W), nodata as NaN (as the bands are)."""
    return nodata_as_nan(src.read(window=Window(0, start, var.grid.width, stop - start)), var)
