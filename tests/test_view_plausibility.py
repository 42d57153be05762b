"""The input plausibility check (scripts/inference/view_plausibility.py) on the example case's DRRs: the correct
PA/lateral pair passes; swapped views, a mirrored lateral, a mirrored PA and a view rotated 90 degrees are flagged,
by the check alone and through the self-check's ``consistent``; a constant image has no body."""

from __future__ import annotations

import json

import pytest
import torch
from scripts.frame import FRAME
from scripts.inference.selfcheck import SelfCheckd, self_check
from scripts.inference.view_plausibility import PLAUSIBILITY_MARGINS, view_measures, views_plausible
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.torch_renderer import project_hu
from scripts.transforms.radiograph import postprocess_radiograph

TRAINING = ProjectionGeometry.from_preset("perx2ct")
CLINICAL = TRAINING.with_view("pa", sad_mm=1650.0, sid_mm=1800.0, detector_size_mm=(430.0, 430.0)).with_view(
    "lateral", sad_mm=1600.0, sid_mm=1800.0, detector_size_mm=(430.0, 430.0)
)


@pytest.fixture(scope="module")
def example_views(example_lungdx_in_frame):
    """LungDx-A0001's DRRs as network inputs ``(2, 128, 128)`` at the training and a clinical set-up, and the CT
    resampled (trilinear) into the output frame as ``"cube"`` (HU, ``(X, Y, Z)`` LPS)."""
    arr, spacing, origin, iso, cube = example_lungdx_in_frame
    out = {}
    for name, g in (("training", TRAINING), ("clinical", CLINICAL)):
        raw = project_hu(torch.from_numpy(arr)[None, None], spacing, origin, g.with_isocentre(iso))[0]
        out[name] = torch.stack([postprocess_radiograph(r) for r in raw])
    out["cube"] = cube
    return out


@pytest.mark.parametrize("setup", ["training", "clinical"])
def test_correct_pair_passes_swapped_and_mirrored_lateral_flagged(example_views, setup):
    pa, lat = example_views[setup]
    good = views_plausible(torch.stack([pa, lat]))
    assert good["plausible"], good
    assert good["reasons"] == [] and set(good["margins"]) == set(PLAUSIBILITY_MARGINS)
    # the documented sides: heart (PA) and spine (lateral) on the image's right, the PA the more symmetric view, the
    # higher diaphragm dome (the patient's right) on the PA's left; the views' row profiles alike
    assert good["scores"]["swap_margin"] > 0.05 and good["scores"]["lateral_spine_side"] > 0.1
    assert good["views"]["pa"]["heart_side"] > 0 and good["views"]["pa"]["diaphragm_side"] > -0.02  # domes level here
    assert good["scores"]["pa_laterality"] > 0.5 and good["scores"]["row_consistency"] > 0.8
    swapped = views_plausible(torch.stack([lat, pa]))
    assert not swapped["plausible"] and swapped["scores"]["swap_margin"] < -0.05
    assert any("swap_margin" in r for r in swapped["reasons"])
    mirrored = views_plausible(torch.stack([pa, lat.flip(-1)]))
    assert not mirrored["plausible"] and mirrored["scores"]["lateral_spine_side"] < -0.1
    # a mirrored PA: heart border and higher dome change sides, nothing else changes
    pa_mirrored = views_plausible(torch.stack([pa.flip(-1), lat]))
    assert not pa_mirrored["plausible"] and pa_mirrored["scores"]["pa_laterality"] < -0.5
    assert [r.split(":")[-1].split()[0] for r in pa_mirrored["reasons"]] == ["pa_laterality"]
    # the lateral rotated by 90 degrees (head to the image's left): its rows no longer follow the PA's
    rotated = views_plausible(torch.stack([pa, lat.rot90(1, (0, 1))]))
    assert not rotated["plausible"] and rotated["scores"]["row_consistency"] < 0.6
    assert any("row_consistency" in r for r in rotated["reasons"])


def test_constant_image_has_no_body_and_bad_input_refused(example_views):
    pa, lat = example_views["training"]
    assert view_measures(torch.full_like(pa, 0.5))["half_width_px"] == 0
    flat = views_plausible(torch.stack([pa, torch.full_like(lat, 0.5)]))
    assert not flat["plausible"] and "no body" in flat["reasons"][0]
    with pytest.raises(ValueError, match="unknown view-plausibility"):
        views_plausible(torch.stack([pa, lat]), margins={"x": 1.0})
    with pytest.raises(ValueError, match="views including pa and lateral"):
        views_plausible(pa[None])


def test_selfcheck_consistent_needs_plausible_views(example_views, tmp_path):
    """With the ground-truth CT as the reconstruction, a swapped pair fails the re-projection rule anyway; a mirrored
    lateral fed to the cube re-projected *mirrored* (so re-projection agrees) is flagged only by the views' anatomy."""
    pa, lat = example_views["training"]
    # a 'reconstruction' that re-projects like the mirrored lateral: the CT mirrored anterior-posterior (LPS y)
    arr_cube = example_views["cube"]
    inputs = torch.stack([pa, lat.flip(-1)])
    result = self_check(arr_cube[:, ::-1].copy(), inputs, TRAINING)
    assert result["views_plausible"] is not None and not result["views_plausible"]["plausible"]
    assert not result["consistent"]
    off = self_check(arr_cube[:, ::-1].copy(), inputs, TRAINING, view_margins=False)
    assert off["views_plausible"] is None and off["consistent"], off["scores"]  # re-projection alone: passes
    # the JSON beside an output carries the plausibility block
    item = {
        "case_id": "c",
        "pred": FRAME.hu_to_target(torch.from_numpy(arr_cube))[None],
        "image": torch.stack([pa, lat]),
    }
    SelfCheckd(output_dir=str(tmp_path), geometry=TRAINING)(item)
    report = json.loads((tmp_path / "c.selfcheck.json").read_text())
    assert report["views_plausible"]["plausible"] is True and set(report["views_plausible"]["scores"]) >= {
        "swap_margin",
        "lateral_spine_side",
        "pa_laterality",
        "row_consistency",
    }


@pytest.mark.parametrize("configs", [("inference.json",), ("train.json", "evaluate.json")])
def test_selfcheck_view_margins_option_reaches_the_rule(example_views, bundle_config, tmp_path, configs):
    """``--selfcheck_view_margins`` reaches the configs' SelfCheckd: null = the default tests, false = none, a mapping
    = only those; a value of another kind is refused."""
    pa, lat = example_views["training"]
    cube = example_views["cube"]
    pred = FRAME.hu_to_target(torch.from_numpy(cube))[None]
    item = {"case_id": "m", "pred": pred, "image": torch.stack([pa.flip(-1), lat])}
    verdicts = {}
    for name, margins in (("default", None), ("off", False), ("lateral only", {"lateral_spine_side": 0.07})):
        parser = bundle_config(*configs, selfcheck_view_margins=margins, output_dir=str(tmp_path / name))
        key = "postprocessing" if configs == ("inference.json",) else "validate#postprocessing"
        check = [t for t in parser.get_parsed_content(key).transforms if isinstance(t, SelfCheckd)][0]
        check.output_dir = tmp_path / name
        plausible = check(item)["selfcheck"]["views_plausible"]
        verdicts[name] = (
            None
            if plausible is None
            else (
                plausible["plausible"],
                sorted(plausible["margins"]),
                [r.split(":")[-1].split()[0] for r in plausible["reasons"]],
            )
        )
    # the ground-truth CT with a mirrored PA: only the PA laterality test objects
    assert verdicts["default"] == (False, sorted(PLAUSIBILITY_MARGINS), ["pa_laterality"])
    assert verdicts["off"] is None
    assert verdicts["lateral only"] == (True, ["lateral_spine_side"], [])
    with pytest.raises(ValueError, match="view_margins must be"):
        SelfCheckd(view_margins="yes")
    with pytest.raises(ValueError, match="unknown view-plausibility scores"):
        SelfCheckd(view_margins={"pa_heart_side": 0.0})
