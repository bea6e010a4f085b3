"""Windows of a padded scene file (``<scene>_scene.arrow``), read a block of rows at a time.

The scene file holds one Arrow row per padded image row, in record batches of a few rows
(:func:`mamol.conversion.remote._write_scene`). The window of pixel (r, c) covers padded rows [r, r + P) and
columns [c, c + P). :class:`SceneRows` serves the windows of pixels whose row falls in record batch k from
*block* k: that batch's rows plus the next P - 1 rows (from the following batches), copied out of a memory map
that is closed right after, so a process holds one block (about one record batch of rows), never the scene,
however many pixels it cuts. Pixels in row-major order (as maps read them) load each block once.

A file of one record batch (a small scene, or one converted before scene files were written in batches) is
viewed in place instead, zero-copy, as one block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

from mamol.data.arrow import fixed_list_view, open_arrow

__all__ = ["SceneRows"]


class SceneRows:
    """Windows (n, C, P, P) of the modalities ``bands`` (name -> C) of the padded scene file ``path``.

    Args:
        path: the scene file.
        bands: band count of each modality to read.
        patch_size: P.
        padded_shape: (Hp, Wp) from the file's metadata.
    """

    def __init__(self, path: str | Path, bands: dict[str, int], patch_size: int,
                 padded_shape: Sequence[int]) -> None:
        self.path, self.bands, self.patch_size = Path(path), dict(bands), int(patch_size)
        self.hp, self.wp = (int(n) for n in padded_shape)
        table = open_arrow(self.path)  # memory-mapped; checks the row count against the metadata
        lengths = [len(chunk) for chunk in table.column("label").chunks]
        self.starts = np.cumsum([0, *lengths])  # (k + 1,) first padded row of each record batch, then Hp
        labels = [fixed_list_view(chunk, (self.wp,)) for chunk in table.column("label").chunks]
        self._single = len(lengths) == 1
        if self._single:  # zero-copy views of the mapped file, as one block
            self._table = table
            self.labels = labels[0]  # (Hp, Wp)
            self._block = (0, {m: self._windows(self._rows(table.column(m).chunks[0], m)) for m in self.bands})
        else:
            self._table = None
            self.labels = np.concatenate(labels)  # (Hp, Wp) int16 copy: the file is closed below
            self._block = None
        del table, labels

    def _rows(self, chunk: pa.Array, m: str) -> np.ndarray:
        return fixed_list_view(chunk, (self.wp, self.bands[m]))  # (rows, Wp, C)

    def _windows(self, rows: np.ndarray) -> np.ndarray:
        p = self.patch_size
        return sliding_window_view(rows, (p, p), axis=(0, 1))  # (rows - P + 1, Wp - P + 1, C, P, P) view

    def _load(self, k: int) -> dict[str, np.ndarray]:
        """Windows of block ``k``: padded rows [starts[k], min(starts[k + 1] + P - 1, Hp)), copied."""
        if self._block is not None and self._block[0] == k:
            return self._block[1]
        self._block = None  # release the previous block before reading the next
        first, stop = int(self.starts[k]), min(int(self.starts[k + 1]) + self.patch_size - 1, self.hp)
        last = int(np.searchsorted(self.starts, stop, side="left"))  # batches k .. last - 1 cover [first, stop)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.bands}
        with pa.memory_map(str(self.path)) as source:
            reader = pa.ipc.open_file(source)
            for j in range(k, last):
                batch = reader.get_batch(j)
                low, high = max(first, int(self.starts[j])), min(stop, int(self.starts[j + 1]))
                for m in self.bands:
                    rows = self._rows(batch.column(m), m)
                    parts[m].append(rows[low - int(self.starts[j]):high - int(self.starts[j])])
            block = {m: self._windows(np.concatenate(parts[m])) for m in self.bands}  # copies; the map closes
            del parts, batch, rows, reader
        self._block = (k, block)
        return block

    def cut(self, m: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Windows (n, C, P, P) of modality ``m`` around pixels (rows, cols) (unpadded positions)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        blocks = np.searchsorted(self.starts, rows, side="right") - 1  # (n,) block of each pixel's top row
        if len(rows) == 0 or blocks[0] == blocks[-1] and (blocks == blocks[0]).all():
            k = int(blocks[0]) if len(rows) else 0
            return self._load(k)[m][rows - int(self.starts[k]), cols]  # one gather
        p = self.patch_size
        out = np.empty((len(rows), self.bands[m], p, p), dtype=np.float32)
        for k in np.unique(blocks):  # ascending: row-major pixels load each block once
            sel = blocks == k
            out[sel] = self._load(int(k))[m][rows[sel] - int(self.starts[k]), cols[sel]]
        return out
