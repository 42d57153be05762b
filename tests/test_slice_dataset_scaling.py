"""The slice loader's per-process memory does not grow with the number of cases (issue 23): a
:class:`~scripts.data.slice_sampling.SliceDataset` keeps at most ``OPEN_CASES`` cases open (memory maps hold a file
descriptor each), and a case closed and opened again gives the same samples."""

from __future__ import annotations

import numpy as np
import torch
from scripts.data import slice_sampling
from scripts.data.slice_sampling import SliceDataset


def _cases(tmp_path, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        d = tmp_path / f"case{i}"
        d.mkdir()
        np.save(d / "image.npy", rng.random((2, 128, 128), dtype=np.float32))
        np.save(d / "target.npy", rng.random((16, 16, 16), dtype=np.float32))
        cases.append({"dir": str(d), "case_id": f"case{i}", "kind": "target", "volume": "target.npy", "shape": 16})
    return cases


def test_open_cases_are_bounded_and_reopen_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(slice_sampling, "OPEN_CASES", 3)
    cases = _cases(tmp_path, 7)
    ds = SliceDataset(cases)
    per_case = 3 * 128
    keys = [c * per_case + 5 * c + 1 for c in range(7)]
    first = [ds[k] for k in keys]
    assert len(ds._open) == 3 and list(ds._open) == [4, 5, 6]  # the three most recently used
    again = [ds[k] for k in reversed(keys)][::-1]  # every case evicted and opened again
    assert len(ds._open) == 3
    for a, b in zip(first, again):
        for key in ("image", "label", "slice_axis", "slice_index", "zoom_box"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    fresh = SliceDataset(cases)
    torch.testing.assert_close(fresh[keys[2]]["label"], first[2]["label"], rtol=0, atol=0)
