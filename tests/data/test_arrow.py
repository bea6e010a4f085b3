"""Arrow IPC helpers (mamol.data.arrow): atomic writes, metadata, memory-mapped zero-copy reads, bad files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pyarrow as pa
import pytest

from mamol.data.arrow import (
    ArrowFileError,
    column_views,
    fixed_list_array,
    num_rows,
    open_arrow,
    read_metadata,
    write_arrow,
    write_table,
)


def _table(n: int = 10) -> pa.Table:
    patches = np.arange(n * 2 * 3 * 3, dtype=np.float32).reshape(n, 2, 3, 3)
    return pa.table({"x": fixed_list_array(patches), "label": pa.array(np.arange(n, dtype=np.int64))})


def test_roundtrip_metadata_and_zero_copy(tmp_path) -> None:
    path = write_table(tmp_path / "a.arrow", _table(), {"kind": "remote", "num_rows": 10, "bands": {"x": 2}})
    assert read_metadata(path) == {"kind": "remote", "num_rows": 10, "bands": {"x": 2}}
    assert num_rows(path) == 10
    table = open_arrow(path)
    (view,) = column_views(table, "x", (2, 3, 3))
    assert view.shape == (10, 2, 3, 3) and not view.flags.writeable and not view.flags.owndata
    np.testing.assert_array_equal(view[4], np.arange(4 * 18, 5 * 18, dtype=np.float32).reshape(2, 3, 3))
    with pytest.raises(KeyError, match="'y' not in Arrow table"):
        column_views(table, "y", (1,))


def test_write_is_atomic_on_failure(tmp_path) -> None:
    table = _table()

    def batches():
        yield table.to_batches()[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_arrow(tmp_path / "b.arrow", table.schema, batches(), {"num_rows": 20})
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_file_has_ordinary_permissions_and_interrupted_write_leaves_nothing(tmp_path) -> None:
    """Like a file from open(): 0o666 minus the umask (not mkstemp's private 0o600); a failure leaves no file."""
    path = write_table(tmp_path / "perm.arrow", _table(), {"num_rows": 10})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
    table = _table()

    def interrupted():
        yield table.to_batches()[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_arrow(tmp_path / "sub" / "f.arrow", table.schema, interrupted(), {"num_rows": 20})
    assert list((tmp_path / "sub").iterdir()) == []  # neither the target nor a temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["perm.arrow", "sub"]


def test_overwrite_keeps_old_file_until_complete(tmp_path) -> None:
    path = write_table(tmp_path / "c.arrow", _table(3), {"num_rows": 3})

    def failing():
        raise RuntimeError("boom")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError):
        write_arrow(path, _table(3).schema, failing(), {"num_rows": 5})
    assert num_rows(path) == 3


def test_truncated_and_corrupt_files(tmp_path) -> None:
    path = write_table(tmp_path / "d.arrow", _table(50), {"num_rows": 50})
    data = path.read_bytes()
    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArrowFileError, match=r"truncated\.arrow.*truncated or corrupt"):
        open_arrow(truncated)
    with pytest.raises(ArrowFileError, match="truncated.arrow"):
        read_metadata(truncated)
    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ArrowFileError, match="garbage.arrow"):
        open_arrow(garbage)
    with pytest.raises(FileNotFoundError, match="absent.arrow does not exist"):
        open_arrow(tmp_path / "absent.arrow")


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch) -> None:
    path = write_table(tmp_path / "locked.arrow", _table(5))

    def denied(where: str, mode: str = "r") -> pa.MemoryMappedFile:  # what pyarrow raises for a mode-000 file
        raise PermissionError(13, f"Failed to open local file '{where}'. Detail: [errno 13] Permission denied")

    monkeypatch.setattr(pa, "memory_map", denied)
    with pytest.raises(ArrowFileError, match=r"locked\.arrow cannot be read: permission denied"):
        read_metadata(path)


def test_row_count_disagreeing_with_metadata(tmp_path) -> None:
    path = write_table(tmp_path / "e.arrow", _table(4), {"num_rows": 7})
    with pytest.raises(ArrowFileError, match="holds 4 rows, its metadata records num_rows=7"):
        open_arrow(path)
