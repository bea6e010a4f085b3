"""Reading GeoTIFF (``.tif``) and ENVI (``.img`` + ``.hdr``) scene rasters through rasterio (GDAL).

A raster holds one role of a scene folder (a modality, the label raster, a split raster) like a ``.mat`` file
does, with the same file stem. rasterio reads bands as (C, H, W); everything here hands out what the ``.mat``
reader does, H×W[×C] arrays and one H×W band at a time, so a scene converts to the same Arrow columns whichever
format holds it.

A raster knows its grid (:class:`Grid`: CRS, affine transform, size). All rasters of a scene must share the
first modality's grid; :func:`align` refuses one that does not, naming the file and what differs, or, with
``resample``, reads it onto the first modality's grid through :func:`rasterio.warp.reproject` (bilinear for
data, nearest for label and split rasters), band by band. A data raster's ``nodata`` pixels are read as NaN,
so the NaN policy of the conversion (``--nan``) decides about them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject

from mamol.errors import DataError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = ["Grid", "RasterVariable", "align", "iter_raster_bands", "nodata_as_nan", "open_raster",
           "read_raster"]

LABEL_ROLES = ("label", "train", "test")
"""Roles whose rasters hold class codes: resampled with nearest, never given NaN."""


@dataclass(frozen=True)
class Grid:
    """Where a raster's pixels lie: its CRS (WKT, None when it has none), affine transform and size."""

    crs: str | None
    transform: tuple[float, ...]  # (a, b, c, d, e, f): Affine(*transform) maps (col, row) -> (x, y)
    height: int
    width: int

    @property
    def crs_name(self) -> str:
        """A short name for messages (``EPSG:32615``), or 'none'."""
        return CRS.from_wkt(self.crs).to_string() if self.crs else "none"

    def difference(self, other: Grid) -> str | None:
        """What differs from ``other`` (CRS, then transform, then size), in words; None when they match."""
        if (self.crs is None) != (other.crs is None) or (
                self.crs and CRS.from_wkt(self.crs) != CRS.from_wkt(other.crs)):
            return f"CRS {self.crs_name}, expected {other.crs_name}"
        tolerance = 1e-6 * max(abs(other.transform[0]), abs(other.transform[4]), 1e-12)
        if not np.allclose(self.transform, other.transform, rtol=0, atol=tolerance):
            return f"transform {_affine(self.transform)}, expected {_affine(other.transform)}"
        if (self.height, self.width) != (other.height, other.width):
            return f"size {self.height}×{self.width}, expected {other.height}×{other.width}"
        return None

    def as_metadata(self) -> dict:
        """The JSON the Arrow metadata keeps (``georeference``)."""
        return {"crs": self.crs, "transform": list(self.transform), "height": self.height, "width": self.width}


def _affine(transform: tuple[float, ...]) -> str:
    a, b, c, d, e, f = transform
    return f"(pixel {a:g}×{e:g}, origin {c:g}, {f:g}{', rotated' if b or d else ''})"


@dataclass(frozen=True)
class RasterVariable:
    """A scene raster chosen for a role (``shape`` H×W or H×W×C as read: on ``onto`` when resampled)."""

    path: Path
    driver: str  # "GTiff" | "ENVI"
    grid: Grid  # the file's own grid
    count: int  # bands in the file
    dtype: str
    nodata: float | None
    role: str
    onto: Grid | None = None  # read onto this grid (--resample)

    @property
    def key(self) -> str:
        return self.driver

    @property
    def version(self) -> str:
        return self.driver

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def where(self) -> str:
        """The file, for messages about its values."""
        return str(self.path)

    @property
    def shape(self) -> tuple[int, ...]:
        grid = self.onto or self.grid
        return (grid.height, grid.width) if self.count == 1 else (grid.height, grid.width, self.count)

    def describe(self) -> dict:
        """What the Arrow metadata's ``source`` records of this file."""
        out = {"file": self.path.name, "format": self.driver, "bytes": _size(self.path), "shape": list(self.shape)}
        if self.onto is not None:
            out["resampled_from"] = [self.grid.height, self.grid.width]
        return out


def _size(path: Path) -> int:
    header = path.with_suffix(".hdr")
    return path.stat().st_size + (header.stat().st_size if path.suffix.lower() == ".img" and header.is_file() else 0)


def open_raster(path: str | Path, role: str) -> RasterVariable:
    """Describe the raster ``path`` holding ``role`` (reads its header only)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"raster {path} does not exist")
    if path.suffix.lower() == ".img" and not path.with_suffix(".hdr").is_file():
        raise MissingFileError(f"{path}: ENVI data file without its header {path.with_suffix('.hdr').name}")
    try:
        with rasterio.open(path) as src:
            grid = Grid(src.crs.to_wkt() if src.crs else None, tuple(src.transform)[:6], src.height, src.width)
            dtypes = set(src.dtypes)
            variable = RasterVariable(path, src.driver, grid, src.count, src.dtypes[0], src.nodata, role)
    except RasterioError as err:
        raise DataError(f"{path}: not a readable GeoTIFF / ENVI raster ({err})") from err
    if len(dtypes) > 1:
        raise DataError(f"{path}: bands of different data types {sorted(dtypes)}; expected one type for all bands")
    if np.dtype(variable.dtype).kind not in "biuf":
        raise DataError(f"{path}: expected a numeric raster, found data type {variable.dtype}")
    if variable.driver == "ENVI":
        _check_envi_size(variable)
    return variable


def _check_envi_size(var: RasterVariable) -> None:
    """Refuse an ENVI data file shorter than its header declares (GDAL would read the missing part as zeros)."""
    offset = 0
    for line in var.path.with_suffix(".hdr").read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "header offset" and value.strip().isdigit():
            offset = int(value.strip())
    expected = offset + var.grid.height * var.grid.width * var.count * np.dtype(var.dtype).itemsize
    size = var.path.stat().st_size
    if size < expected:
        raise DataError(f"{var.path}: {size} bytes, but its header {var.path.with_suffix('.hdr').name} declares "
                        f"{var.grid.height}×{var.grid.width}×{var.count} {var.dtype} values ({expected} bytes): "
                        f"truncated?")


def align(variables: Mapping[str, RasterVariable | object], resample: bool) -> dict[str, object]:
    """Check that every raster of ``variables`` (role -> variable, the first modality first) lies on the first
    one's grid; with ``resample``, set the others to be read onto it. Non-raster variables (``.mat``) carry no
    grid: they are left to the size check, and cannot be resampled."""
    rasters = {role: v for role, v in variables.items() if isinstance(v, RasterVariable)}
    if not rasters:
        return dict(variables)
    first_role = next(iter(variables))
    reference = variables[first_role]
    out = dict(variables)
    for role, var in rasters.items():
        if var is reference:
            continue
        if not isinstance(reference, RasterVariable):
            if resample:
                raise DataError(f"{reference.label}: has no georeference (a .mat file), so --resample cannot put "
                                f"{var.label} onto its grid; give the first modality as a GeoTIFF / ENVI raster")
            continue
        difference = var.grid.difference(reference.grid)
        if difference is None:
            continue
        if not resample:
            raise DataError(f"{var.label}: {difference} like {reference.label}; every raster must lie on the first "
                            f"modality's grid (pass --resample to reproject it onto {reference.label}'s grid)")
        for other in (var, reference):
            if other.grid.crs is None:
                raise DataError(f"{other.label}: no CRS, so --resample cannot put {var.label} onto "
                                f"{reference.label}'s grid; give both rasters a coordinate system")
        logger.info("%s: %s; resampled onto %s's grid (%s)", var.label, difference, reference.label,
                    "nearest" if role in LABEL_ROLES else "bilinear")
        out[role] = replace(var, onto=reference.grid)
    return out


def nodata_as_nan(values: np.ndarray, var: RasterVariable) -> np.ndarray:
    """``values`` read from ``var`` (a band or a window, any shape) with a data raster's nodata as NaN (float32
    then); label and split rasters, and values without nodata, come back as they are."""
    if var.role in LABEL_ROLES or var.nodata is None:
        return values
    mask = np.isnan(values) if np.isnan(var.nodata) else values == var.nodata
    if mask.any():
        values = values.astype(np.float32)
        values[mask] = np.nan
    return values


def _read_band(src: rasterio.io.DatasetReader, var: RasterVariable, index: int) -> np.ndarray:
    """Band ``index`` (1-based) of ``src`` as (H, W) on the variable's grid; data nodata -> NaN."""
    band = nodata_as_nan(src.read(index), var)  # (H, W) in the file's grid
    is_data = var.role not in LABEL_ROLES
    if var.onto is None:
        return band
    target = var.onto
    if is_data:
        out = np.full((target.height, target.width), np.nan, dtype=np.float32)
        source = band.astype(np.float32, copy=False)
    else:
        out = np.zeros((target.height, target.width), dtype=band.dtype)
        source = band
    reproject(source, out, src_transform=Affine(*var.grid.transform), src_crs=CRS.from_wkt(var.grid.crs),
              dst_transform=Affine(*target.transform), dst_crs=CRS.from_wkt(target.crs),
              src_nodata=np.nan if is_data else None, dst_nodata=np.nan if is_data else 0,
              resampling=Resampling.nearest if not is_data else Resampling.bilinear)
    return out


def iter_raster_bands(var: RasterVariable) -> Iterator[np.ndarray]:
    """The H×W bands of ``var`` one at a time (fresh arrays), in file order."""
    try:
        with rasterio.open(var.path) as src:
            for index in range(1, var.count + 1):
                yield _read_band(src, var, index)
    except RasterioError as err:
        raise DataError(f"{var.path}: cannot read its bands ({err}); truncated or corrupt?") from err


def read_raster(var: RasterVariable) -> np.ndarray:
    """The whole raster as H×W (one band) or H×W×C, like a ``.mat`` variable."""
    bands = list(iter_raster_bands(var))
    return bands[0] if len(bands) == 1 else np.stack(bands, axis=-1)
