"""Scene windows read a block of record batches at a time (mamol.data.scene_rows): the windows of a scene file
written in many record batches equal those of the same scene in one, and a process holds one block."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from mamol.conversion import remote
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import generate_scene, write_scene
from mamol.data.remote import SceneWindows
from tests.fakes.remote import SMALL_COUNTS

H, W, P = 21, 26, 7


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The same scene converted into one record batch and into batches of 2 padded rows (fewer than P - 1)."""
    tmp = tmp_path_factory.mktemp("scene_rows")
    write_scene(generate_scene(height=H, width=W, hsi_bands=5, n_classes=4, modalities=("hsi", "lidar", "sar"),
                               sar_bands=3, seed=1), tmp / "raw")
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, batch_bytes in (("one", remote.BATCH_BYTES), ("many", 2 * (W + P - 1) * (5 + 1 + 3) * 4 + 150)):
            patch.setattr(remote, "BATCH_BYTES", batch_bytes)
            out[name] = prepare_remote("synthetic", tmp / "raw", tmp / name, patch_size=P, **SMALL_COUNTS)["scene"]
    return out


def _record_batches(path) -> list[int]:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


def test_many_record_batches_give_the_windows_of_one(scenes):
    assert _record_batches(scenes["one"]) == [H + P - 1]
    assert _record_batches(scenes["many"]) == [2] * 13 + [1]  # 27 padded rows
    rng = np.random.default_rng(0)
    for modalities, missing_type, labelled in ((None, 0, False), (["hsi", "lidar", "sar"], 2, True),
                                               (["hsi", "sar"], 1, False)):
        one, many = (SceneWindows(scenes[k], modalities, missing_type, "zeros", labelled) for k in ("one", "many"))
        assert len(one) == len(many)
        np.testing.assert_array_equal(many.label_raster(), one.label_raster())
        for indices in (np.arange(len(one)), rng.choice(len(one), 40, replace=False), [len(one) - 1]):
            a, b = one.batch(indices), many.batch(indices)
            for key, value in a.items():
                assert value == b[key] if key == "task" else torch.equal(value, b[key]), (key, missing_type)
        for i in (0, W - 1, len(one) // 2, len(one) - 1):  # single windows too
            assert all(torch.equal(one[i][m], many[i][m]) for m in one.modalities)
    clone = pickle.loads(pickle.dumps(many))
    assert clone._windows is None and torch.equal(clone[5]["hsi"], many[5]["hsi"])
    in_worker = next(iter(DataLoader(many, batch_size=60, collate_fn=many.collate, num_workers=1)))
    assert torch.equal(in_worker["hsi"], one.batch(range(60))["hsi"])


def test_a_process_holds_one_block_of_rows(scenes):
    """Read in row-major batches, the scene is never held: one block, its record batch plus P - 1 rows."""
    many = SceneWindows(scenes["many"], ["hsi", "lidar"])
    for start in range(0, len(many), 50):
        many.batch(range(start, min(start + 50, len(many))))
        block = many._windows._block[1]["hsi"]  # windows (rows of the block - P + 1, W, C, P, P)
        assert block.shape[0] + P - 1 <= 2 + P - 1
    assert sorted(many._windows._block[1]) == ["hsi", "lidar"]  # only the modalities it serves
    one = SceneWindows(scenes["one"], ["hsi", "lidar"])
    one.batch([0])
    assert one._windows._block[1]["hsi"].shape[:2] == (H, W)  # one record batch: viewed in place, zero-copy
