"""Arrow IPC files: atomic writes, memory-mapped reads, metadata JSON in the schema, zero-copy views.

Every file this project writes carries a JSON object under the schema-metadata key
:data:`mamol.data.formats.METADATA_KEY` (dataset, modalities, band counts, class names, ...), so a reader
learns what a file holds without reading its data. Writes go through :func:`mamol.files.atomic_write` (a
temporary file in the target folder, renamed into place only when complete), so an interrupted run never
leaves a file that looks valid. :func:`check_one_conversion` refuses a dataset's split files that come from
different conversions (their ``conversion_id``, see :mod:`mamol.conversion.writing`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from mamol.data.formats import CONVERSION_KEY, METADATA_KEY
from mamol.errors import DataError, MissingFileError
from mamol.files import atomic_write

logger = logging.getLogger(__name__)
_warned: set[tuple[str, ...]] = set()  # file sets already warned about (no conversion ids)


class ArrowFileError(DataError):
    """An Arrow file that is missing its data: truncated, corrupt, or not an Arrow IPC file."""


def schema_with_metadata(schema: pa.Schema, metadata: dict) -> pa.Schema:
    """``schema`` carrying ``metadata`` as JSON (sorted keys: the same metadata gives the same bytes)."""
    text = json.dumps(metadata, sort_keys=True, allow_nan=False)
    return schema.with_metadata({METADATA_KEY: text.encode("utf-8")})


def write_arrow(
    path: str | os.PathLike, schema: pa.Schema, batches: Iterable[pa.RecordBatch], metadata: dict | None = None
) -> Path:
    """Write ``batches`` as an Arrow IPC file at ``path`` atomically (:func:`mamol.files.atomic_write`).

    ``metadata`` (JSON-able) is stored under :data:`METADATA_KEY`. Returns the final path.
    """
    path = Path(path)
    schema = schema_with_metadata(schema, metadata or {})
    with atomic_write(path, "wb") as handle, pa.ipc.new_file(handle, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            del batch  # released before the next one is built: lazy batches stay one at a time in memory
    logger.debug("wrote %s", path)
    return path


def write_table(path: str | os.PathLike, table: pa.Table, metadata: dict | None = None) -> Path:
    """Write a whole in-memory ``table`` atomically (see :func:`write_arrow`)."""
    return write_arrow(path, table.schema, table.to_batches(), metadata)


def _open_reader(path: Path) -> pa.ipc.RecordBatchFileReader:
    if not path.is_file():
        raise MissingFileError(f"Arrow file {path} does not exist")
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except PermissionError as err:
        raise ArrowFileError(f"{path} cannot be read: permission denied; expected an Arrow file this user can read "
                             f"(check its permissions)") from err
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        raise ArrowFileError(
            f"{path} is not a readable Arrow IPC file (truncated or corrupt? {path.stat().st_size} bytes): "
            f"{err}. Re-create it with datasets/make_arrow.py"
        ) from err


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of an Arrow file (``{}`` when it has none). Reads the footer only."""
    path = Path(path)
    schema = _open_reader(path).schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArrowFileError(f"{path}: metadata under key {METADATA_KEY!r} is not valid JSON ({err})") from err


def open_arrow(path: str | os.PathLike) -> pa.Table:
    """Open ``path`` memory-mapped as a table (zero-copy: pages are read by the OS on access).

    Raises :class:`ArrowFileError` naming the file for a truncated or corrupt file, including one whose row
    count disagrees with the ``num_rows`` its metadata records.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        table = reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        raise ArrowFileError(f"{path}: cannot read its record batches (truncated or corrupt?): {err}") from err
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if meta is not None:
        expected = json.loads(meta.decode("utf-8")).get("num_rows")
        if expected is not None and expected != table.num_rows:
            raise ArrowFileError(
                f"{path}: holds {table.num_rows} rows, its metadata records num_rows={expected} "
                f"(incomplete or corrupt file); re-create it with datasets/make_arrow.py"
            )
    return table


def num_rows(path: str | os.PathLike) -> int:
    """Row count of an Arrow file without reading its data buffers."""
    reader = _open_reader(Path(path))
    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def fixed_list_view(chunk: pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-copy read-only numpy view (len(chunk), *shape) of a FixedSizeList<float/int> chunk."""
    if not pa.types.is_fixed_size_list(chunk.type):
        raise TypeError(f"expected a fixed-size list column, got {chunk.type}")
    if chunk.null_count:
        raise DataError("fixed-size list column holds nulls; expected dense data")
    values = chunk.flatten()  # slice of the child array honouring the chunk's offset, no copy
    return values.to_numpy(zero_copy_only=True).reshape((len(chunk), *shape))


def column_views(table: pa.Table, column: str, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per-chunk zero-copy views (n_chunk, *shape) of fixed-size list column ``column``."""
    if column not in table.column_names:
        raise KeyError(f"column {column!r} not in Arrow table (columns: {table.column_names})")
    return [fixed_list_view(chunk, shape) for chunk in table.column(column).chunks]


def fixed_list_array(values: np.ndarray) -> pa.FixedSizeListArray:
    """(n, ...) numpy array -> FixedSizeList array of n rows (each row flattened, C order)."""
    n = values.shape[0]
    flat = np.ascontiguousarray(values).reshape(-1)
    width = flat.size // n if n else int(np.prod(values.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def check_one_conversion(paths: Sequence[Path]) -> None:
    """Refuse split files of one dataset that come from different conversions (DataError naming them)."""
    ids = {}
    for path in map(Path, paths):
        try:
            ids[path] = read_metadata(path).get(CONVERSION_KEY)
        except ArrowFileError:  # a broken file is refused by name when its split is opened
            continue
    distinct = set(ids.values())
    if not ids:
        return
    if len(distinct) <= 1:
        key = tuple(sorted(str(p) for p in ids))
        if None in distinct and key not in _warned:
            _warned.add(key)
            logger.warning("%s: no conversion id (converted before ids were recorded), so nothing shows these "
                           "files come from one conversion; re-run datasets/make_arrow.py to be sure",
                           ", ".join(p.name for p in ids))
        return
    listed = ", ".join(f"{p.name} ({i or 'no id'})" for p, i in ids.items())
    raise DataError(f"{Path(next(iter(ids))).parent}: split files of different conversions: {listed} (an "
                    f"interrupted or concurrent datasets/make_arrow.py?); re-run the conversion into this folder")
