"""The chest-CT plausibility check (scripts.ct.chest_check): what it rejects, with what it found and expected, and
the real chest geometries it accepts."""

from __future__ import annotations

import pytest
from scripts.ct.chest_check import ChestCTCheck
from scripts.errors import CTLoadError


@pytest.mark.parametrize(
    "shape, spacing, words",
    [
        ((512, 512, 5), (0.7, 0.7, 2.5), ("5 slices", "at least 20")),
        ((512, 512, 40), (0.7, 0.7, 2.5), ("z extent 100.0 mm", "at least 150 mm")),
        ((512, 512, 100), (10.0, 10.0, 2.5), ("pixel spacing 10 mm", "0.2 to 5 mm")),
        ((512, 512, 30), (0.7, 0.7, 12.0), ("slice spacing 12 mm", "0.2 to 10 mm")),
        ((128, 128, 100), (0.7, 0.7, 2.5), ("field of view 90 x 90 mm", "at least 200 mm")),
    ],
)
def test_chest_ct_check_says_what_was_found_and_expected(shape, spacing, words):
    with pytest.raises(CTLoadError) as e:
        ChestCTCheck()(shape, spacing, "SRC")
    msg = str(e.value)
    assert msg.startswith("SRC: not a plausible chest CT") and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_chest_ct_check_accepts_real_chest_geometries():
    for shape, spacing in [
        ((512, 512, 133), (0.703, 0.703, 2.5)),
        ((512, 512, 30), (0.646, 0.646, 8.0)),
        ((512, 512, 160), (2.0, 2.0, 2.0)),
        ((64, 64, 64), (5.0, 5.0, 5.0)),
    ]:
        ChestCTCheck()(shape, spacing, "ok")
