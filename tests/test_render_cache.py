"""A loader worker's render cubes stay bounded in the number of cases (issue 23: peak RSS per worker flat in N)."""

from __future__ import annotations

import numpy as np
import pytest
import scripts.transforms.rigid_views as rigid_views
from scripts.data.slice_sampling import SliceDataset
from scripts.frame import FRAME
from scripts.transforms.rigid_views import RandRigidViewsd, RandRigidViewsDataset


def _cases(tmp_path, n: int) -> list[dict]:
    cases = []
    for c in range(n):
        folder = tmp_path / f"case{c}"
        folder.mkdir()
        np.save(folder / "image.npy", np.zeros((2, 8, 8), np.float32))
        np.save(folder / "target.npy", np.full((FRAME.shape,) * 3, 0.1 * c, np.float32))
        cases.append({"case_id": f"case{c}", "dir": str(folder), "kind": "target", "volume": "target.npy"})
    return cases


def test_render_cubes_are_kept_for_the_most_recent_cases_only(tmp_path, monkeypatch):
    monkeypatch.setattr(rigid_views, "RENDER_CASES", 2)
    data = RandRigidViewsDataset(SliceDataset(_cases(tmp_path, 4)), RandRigidViewsd(), seed=0)
    for c in (0, 1, 0, 2, 3):
        mu, spacing = data.attenuation(c)
        hu, _ = data._cube(c)
        # the right case's cube comes back, converted once while kept
        assert float(hu.mean()) == pytest.approx(float(FRAME.target_to_hu(np.float32(0.1 * c))), abs=1e-3)
        assert data.attenuation(c)[0] is mu and spacing == pytest.approx(FRAME.size_mm / FRAME.shape)
    assert list(data._cubes) == [2, 3]  # 0 and 1 were dropped, least recently used first
