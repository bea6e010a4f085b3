"""Per-band normalisation of a remote modality, with its NaN/Inf policy (SPEC §3.1: ``minmax``, ``zscore``,
``none``), fed one band at a time so no full-cube temporaries are made."""

from __future__ import annotations

import logging

import numpy as np

from mamol.conversion.readers import Variable
from mamol.data.formats import NAN_POLICIES, NORMALIZATIONS
from mamol.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["BandNormaliser"]


class BandNormaliser:
    """NaN/Inf policy and per-band normalisation of one modality, fed one H×W float32 band at a time.

    Each band is checked for NaN/Inf (``refuse``: counted, and :meth:`finish` raises naming file, key and
    count; ``fill``: replaced by the band mean, with a warning) and normalised in place: ``minmax``
    (x - min) / (max - min) in [0, 1] (a constant band becomes 0), ``zscore`` (x - mean) / std (std 0 -> 1),
    ``none`` unchanged. Band by band, so no full-cube temporaries.

    What it did to band ``c`` (fill value, shift, scale) is kept: :meth:`apply` does the same to a window of that
    band, value for value, so a scene read in windows (:mod:`mamol.conversion.windowed`) normalises like one read
    whole.
    """

    def __init__(self, var: Variable, method: str, nan: str) -> None:
        if method not in NORMALIZATIONS:
            raise DataError(f"normalize must be one of {NORMALIZATIONS}, got {method!r}")
        if nan not in NAN_POLICIES:
            raise DataError(f"nan policy must be one of {NAN_POLICIES}, got {nan!r}")
        self.var, self.method, self.nan = var, method, nan
        self.first: list[float] = []  # per band: min (minmax) or mean (zscore)
        self.second: list[float] = []  # per band: max (minmax) or std (zscore)
        self.non_finite, self.nan_count, self.bad_bands = 0, 0, []
        self.steps: list[tuple[float | None, float | None, float | None]] = []  # per band: (fill, shift, scale)
        self._scratch: np.ndarray | None = None  # float64 band for the zscore statistics
        self._scratch_layout: tuple | None = None

    def __call__(self, band: np.ndarray) -> np.ndarray:
        """Check, fill and normalise the next band (H, W) in place; returns it."""
        bad = ~np.isfinite(band)
        n_bad = int(bad.sum())
        fill = None
        if n_bad:
            self.non_finite += n_bad
            self.nan_count += int(np.isnan(band).sum())
            self.bad_bands.append(len(self.first))
            if self.nan == "refuse":  # finish() raises: leave the band as it is
                self.first.append(np.nan)
                self.second.append(np.nan)
                self.steps.append((None, None, None))
                return band
            good = band[~bad]
            fill = float(good.mean(dtype=np.float64)) if good.size else 0.0
            band[bad] = fill
        if self.method == "none":
            self.first.append(np.nan)
            self.second.append(np.nan)
            self.steps.append((fill, None, None))
            return band
        if self.method == "minmax":
            low, high = float(band.min()), float(band.max())
            shift, scale = low, (1.0 / (high - low) if high > low else 0.0)
        else:
            low, high = self._mean_std(band)
            shift, scale = low, 1.0 / (high if high > 0 else 1.0)
        self.first.append(low)
        self.second.append(high)
        self.steps.append((fill, shift, scale))
        return self._rescale(band, shift, scale)

    @staticmethod
    def _rescale(values: np.ndarray, shift: float | None, scale: float | None) -> np.ndarray:
        if shift is not None:
            values -= np.float32(shift)
            values *= np.float32(scale)
        return values

    def apply(self, band: int, window: np.ndarray) -> np.ndarray:
        """Do to ``window`` (float32, any shape, part of band ``band``) in place what :meth:`__call__` did to that
        whole band: the same fill value and the same float32 shift and scale, so every value comes out the same."""
        fill, shift, scale = self.steps[band]
        if fill is not None:
            window[~np.isfinite(window)] = fill
        return self._rescale(window, shift, scale)

    def _mean_std(self, band: np.ndarray) -> tuple[float, float]:
        """``band.mean(dtype=float64)``, ``band.std(dtype=float64)`` to the last bit, the same operations in the same
        order, but through one float64 scratch band kept for the next band instead of a fresh one each time (the
        heap keeps freed 5 MiB blocks, which showed in the conversion's peak memory)."""
        layout = (band.shape, tuple(np.argsort(band.strides)))  # the memory order numpy's own temporary would have
        if self._scratch_layout != layout:
            self._scratch, self._scratch_layout = np.empty_like(band, dtype=np.float64), layout
        mean = np.add.reduce(band, axis=None, dtype=np.float64, keepdims=True) / band.size
        np.subtract(band, mean, out=self._scratch)
        np.multiply(self._scratch, self._scratch, out=self._scratch)
        return float(mean.item()), float(np.sqrt(np.add.reduce(self._scratch, axis=None) / band.size))

    def finish(self) -> tuple[dict[str, list[float]], int]:
        """After the last band: raise for refused NaN/Inf, log warnings; (statistics (JSON-able), values filled)."""
        bands = self.bad_bands
        if self.non_finite and self.nan == "refuse":
            raise DataError(
                f"{self.var.where} holds {self.non_finite} non-finite values "
                f"({self.nan_count} NaN, {self.non_finite - self.nan_count} Inf) in bands {bands[:10]}"
                f"{'...' if len(bands) > 10 else ''}; fix the file or convert with --nan fill (replaces them "
                f"with the band mean)"
            )
        if self.non_finite:
            logger.warning("%s: filled %d NaN/Inf values (bands %s) with the band mean", self.var.where,
                           self.non_finite, bands[:10])
        if self.method == "none":
            return {}, self.non_finite
        if self.method == "minmax":
            constant = [c for c, (low, high) in enumerate(zip(self.first, self.second)) if high == low]
            if constant:
                logger.warning("%s: %d constant band(s) %s normalise to 0", self.var.label, len(constant),
                               constant[:10])
            return {"min": self.first, "max": self.second}, self.non_finite
        return {"mean": self.first, "std": self.second}, self.non_finite
