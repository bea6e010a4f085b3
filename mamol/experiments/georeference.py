"""Where a scene's pixels lie on the Earth, as maps need it: the ``georeference`` of the Arrow metadata read back.

The converter keeps the CRS (WKT), the affine transform ``(a, b, c, d, e, f)`` (x = a·col + b·row + c,
y = d·col + e·row + f, at pixel corners) and the grid size of a scene converted from GeoTIFF / ENVI
(:meth:`mamol.conversion.rasters.Grid.as_metadata`). :mod:`mamol.experiments.geotiff` writes maps on that grid,
:func:`mamol.experiments.plots.map_figure` labels its axes with map coordinates and draws a scale bar from it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rasterio.crs import CRS

from mamol.errors import DataError

__all__ = ["Georeference"]


@dataclass(frozen=True)
class Georeference:
    """A scene's grid: CRS, transform and size (the Arrow metadata's ``georeference``)."""

    crs: CRS
    transform: tuple[float, float, float, float, float, float]  # (a, b, c, d, e, f)
    height: int
    width: int

    @classmethod
    def from_metadata(cls, georeference: Mapping[str, Any]) -> Georeference:
        """From the metadata's JSON: ``crs`` (WKT), ``transform`` (at least 6 numbers), ``height``, ``width``."""
        a, b, c, d, e, f = (float(v) for v in georeference["transform"][:6])
        return cls(CRS.from_wkt(georeference["crs"]), (a, b, c, d, e, f), int(georeference["height"]),
                   int(georeference["width"]))

    def check_shape(self, shape: tuple[int, ...], name: str) -> None:
        """DataError naming ``name`` when a (H, W) map is not on this grid."""
        if tuple(shape) != (self.height, self.width):
            raise DataError(f"{name}: the map is {shape[0]}×{shape[1]}, the scene's georeference describes "
                            f"{self.height}×{self.width} pixels; re-create the Arrow files with "
                            f"datasets/make_arrow.py")

    @property
    def north_up(self) -> bool:
        """No rotation or shear (b = d = 0): columns run along x, rows along y."""
        return self.transform[1] == 0 and self.transform[3] == 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x of column 0's left edge, x of the last column's right edge, y of row 0's top edge, y of the last
        row's bottom edge) of a north-up grid, in CRS units."""
        a, _, c, _, e, f = self.transform
        return c, c + a * self.width, f, f + e * self.height

    @property
    def unit_metres(self) -> float | None:
        """Metres per CRS unit of a projected CRS; None for a geographic one (degrees: a degree of longitude is
        111 km at the equator and shrinks with the cosine of latitude, so no one length in metres fits)."""
        return float(self.crs.linear_units_factor[1]) if self.crs.is_projected else None

    @property
    def crs_name(self) -> str:
        """"WGS 84 / UTM zone 15N (EPSG:32615)", or the name alone when the CRS has no EPSG code."""
        code = self.crs.to_epsg()
        name = self.crs.to_dict(projjson=True).get("name", self.crs.to_string())
        return f"{name} (EPSG:{code})" if code else name
