"""SliceDataset's ground truth from a cached 1 mm cube stored in Fortran order (how nibabel hands prepared cases'
``ct_1mm.nii.gz`` to the slice cache): same values as from a C-order cube, without copying the cube per sample."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scripts.data.slice_sampling import SliceDataset


def _case(folder, cube: np.ndarray) -> dict:
    folder.mkdir()
    np.save(folder / "image.npy", np.zeros((2, 128, 128), np.float32))
    np.save(folder / "ct_1mm.npy", cube)
    n = cube.shape[0]
    return {
        "case_id": folder.name,
        "kind": "1mm",
        "volume": "ct_1mm.npy",
        "shape": n,
        "size_mm": 320.0,
        "dir": str(folder),
    }


@pytest.mark.parametrize("key", [5, 128 + 77, 256 + 40])  # one slice of each axis
def test_fortran_order_cube_same_values_no_copy(tmp_path, key):
    n = 200  # 16 MB of int16: a per-sample copy would dominate the traced peak
    rng = np.random.default_rng(0)
    cube = rng.integers(-1024, 2000, (n, n, n)).astype(np.int16)
    c_case = _case(tmp_path / "c", np.ascontiguousarray(cube))
    f_case = _case(tmp_path / "f", np.asfortranarray(cube))
    ds = SliceDataset([c_case, f_case])
    assert not ds._arrays(1)[1].flags["C_CONTIGUOUS"]  # the cube really is memory-mapped in Fortran order
    per_case = len(ds) // 2
    a = ds[key]["label"]
    tracemalloc.start()
    b = ds[per_case + key]["label"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(a.abs().sum()) > 0
    assert (
        peak < cube.nbytes / 4
    ), f"{peak / 2**20:.1f} MiB traced for one sample of a {cube.nbytes / 2**20:.0f} MiB cube"
