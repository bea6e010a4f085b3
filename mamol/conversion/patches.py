"""Padding and patch cutting: a patch of side P around pixel (r, c) of a symmetrically padded scene."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["extract_patches", "pad_index"]


def pad_index(n: int, patch_size: int) -> np.ndarray:
    """Source index of each position of a symmetrically padded axis of length n + P - 1 (edge repeated)."""
    before, after = patch_size // 2, patch_size - 1 - patch_size // 2
    return np.pad(np.arange(n), (before, after), mode="symmetric")


def extract_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
    """(n, C, P, P) C-contiguous windows of a padded (Hp, Wp, C) scene: pixel (r, c) sits at (P//2, P//2)."""
    windows = sliding_window_view(padded, (patch_size, patch_size), axis=(0, 1))  # (H, W, C, P, P) view
    out = np.empty((len(rows), *windows.shape[2:]), dtype=padded.dtype)
    for k, (r, c) in enumerate(zip(rows, cols)):  # window by window: fancy indexing gives a strided copy
        out[k] = windows[r, c]
    return out
