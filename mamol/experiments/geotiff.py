"""Classification maps as GeoTIFF, for a GIS to lay over the scene (``map_<setting>.tif``).

A map of a scene converted from GeoTIFF / ENVI rasters carries the scene's georeference: the CRS and transform
of its first modality, which the converter keeps in the Arrow metadata (``georeference``,
:meth:`mamol.conversion.rasters.Grid.as_metadata`). The GeoTIFF holds one band of class codes: 1..K for the
classes (the order of ``class_names``), 0 where no prediction was made, declared as nodata; uint8 up to 254
classes, uint16 beyond. Its colour table gives each class the colour of the PNG maps
(:func:`mamol.experiments.plots.palette_bytes`), code 0 transparent; the class names are the band's tags
(``CLASS_<code>=<name>``, and ``class_names`` as JSON in the file's tags), the band description says what the
codes are. A scene without georeference (converted from ``.mat``) gets no GeoTIFF.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from mamol.experiments.georeference import Georeference
from mamol.experiments.plots import palette_bytes
from mamol.files import atomic_write

__all__ = ["NODATA", "class_colours", "write_map_geotiff"]

NODATA = 0
"""The code of pixels without a prediction (class k is code k + 1)."""


def class_colours(n_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: code -> RGBA 0..255 (code 0 transparent, class k the palette's colour k)."""
    rgb = palette_bytes(n_classes)  # (K, 3)
    return {NODATA: (0, 0, 0, 0), **{k + 1: (*map(int, rgb[k]), 255) for k in range(n_classes)}}


def write_map_geotiff(prediction: np.ndarray, class_names: Sequence[str], georeference: Mapping[str, Any],
                      path: str | os.PathLike) -> Path:
    """Write the (H, W) map ``prediction`` (class 0..K-1, -1 = not predicted) as a GeoTIFF at ``path``, atomically.

    ``georeference`` is the Arrow metadata's (``crs`` WKT, ``transform`` (a, b, c, d, e, f), ``height``,
    ``width``); a map of another size is refused by name.
    """
    path = Path(path)
    height, width = prediction.shape
    grid = Georeference.from_metadata(georeference)
    grid.check_shape(prediction.shape, path.name)
    n_classes = len(class_names)
    dtype = np.uint8 if n_classes < 255 else np.uint16
    codes = np.where(prediction >= 0, prediction + 1, NODATA).astype(dtype)  # (H, W)
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": np.dtype(dtype).name,
               "crs": grid.crs, "transform": Affine(*grid.transform),
               "nodata": NODATA, "compress": "deflate"}
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with MemoryFile() as memory:  # GDAL writes the file in memory (a compressed byte per pixel), then one write
        with memory.open(**profile) as dst:
            dst.write(codes, 1)
            dst.write_colormap(1, class_colours(n_classes))
            dst.set_band_description(1, f"class code: 1..{n_classes} = class_names, {NODATA} = not predicted")
            dst.update_tags(1, **{f"CLASS_{k + 1}": name for k, name in enumerate(class_names)})
            dst.update_tags(class_names=json.dumps(list(class_names)), nodata_meaning="not predicted")
        with atomic_write(path, "wb") as handle:
            handle.write(memory.read())
    return path
