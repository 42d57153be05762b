"""Evaluation (configs/evaluate.json) with each case's own DRR geometry and the self-check as per-case columns
(issue 19): a case prepared at a clinical set-up is reconstructed with that set-up's geometry, and the self-check's
consistent / NCC / SSIM / margins stand beside the honest metrics, per case and in the summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from scripts.evaluation.case_checks import (
    SELFCHECK_COLUMNS,
    CaseGeometryd,
    PrepareBatchWithCaseGeometry,
    SelfCheckMetricHandler,
    selfcheck_value,
    view_geometry_text,
)
from scripts.projection.geometry import ProjectionGeometry

TRAINING = ProjectionGeometry.from_preset("perx2ct")
LATERAL_1500 = TRAINING.with_view("lateral", sad_mm=1300.0, sid_mm=1500.0, detector_size_mm=(430.0, 430.0))


def test_view_geometry_text_keeps_the_training_setup_and_carries_another():
    trained = TRAINING.with_isocentre((1.0, 2.0, 3.0)).with_detector_shape((128, 128)).to_dict()
    assert view_geometry_text(json.dumps(trained), TRAINING) == ""
    assert view_geometry_text("", TRAINING) == ""
    # the legacy sampling preset's training DRRs were made with perx2ct: no override either
    assert view_geometry_text(json.dumps(trained), ProjectionGeometry.from_preset("perx2ct_official")) == ""
    text = view_geometry_text(json.dumps(LATERAL_1500.with_isocentre((5.0, 0.0, 0.0)).to_dict()), TRAINING)
    g = ProjectionGeometry(**json.loads(text))
    assert g.view_acquisition("lateral") == LATERAL_1500.view_acquisition("lateral")
    assert g.view_acquisition("pa") == TRAINING.view_acquisition("pa")
    assert g.detector_shape == TRAINING.detector_shape and g.isocentre_mm == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="no view"):
        view_geometry_text(json.dumps({**trained, "views": {"pa": trained["views"]["pa"]}}), TRAINING)


def test_case_geometry_is_read_beside_the_case_and_handed_to_the_network(tmp_path):
    case = tmp_path / "case1"
    case.mkdir()
    (case / "case.json").write_text(json.dumps({"geometry": LATERAL_1500.to_dict()}))
    item = CaseGeometryd()({"pa": str(case / "pa.png"), "case_id": "case1"})
    assert json.loads(item["case_geometry"]) == LATERAL_1500.to_dict()
    assert CaseGeometryd()({"ct": "raw.nii.gz"})["case_geometry"] == ""  # a raw CT: the chain's own geometry
    batch = {"image": torch.zeros(2, 2, 8, 8), "label": torch.zeros(2, 1, 4, 4, 4)}
    prep = PrepareBatchWithCaseGeometry(base=TRAINING)
    _, _, _, kwargs = prep({**batch, "case_geometry": ["", item["case_geometry"]]})
    first, second = kwargs["geometry"]
    assert first == TRAINING and second.view_acquisition("lateral").sid_mm == 1500.0
    assert prep({**batch, "case_geometry": ["", ""]})[3] == {}


def test_selfcheck_columns_per_case_and_mean():
    """The handlers of the columns in a real engine: one value per case (decollated outputs), the mean in metrics,
    NaN for a case without a self-check."""
    checks = [
        {"consistent": True, "views": {"pa": {"ncc": 0.95}, "lateral": {"ncc": 0.91}}, "scores": {"swap_margin": 0.2}},
        {
            "consistent": False,
            "views": {"pa": {"ncc": 0.40}, "lateral": {"ncc": 0.93}},
            "scores": {"swap_margin": -0.1},
        },
        None,
    ]
    engine = Engine(
        lambda e, i: [{"selfcheck": c} for c in checks[i : i + 2]] if i == 0 else [{"selfcheck": checks[2]}]
    )
    names = {"selfcheck_consistent": "consistent", "selfcheck_pa_ncc": "views.pa.ncc", "swap": "scores.swap_margin"}
    for name, path in names.items():
        SelfCheckMetricHandler(path).attach(engine, name)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.case_metrics)))
    engine.run([0, 2], max_epochs=1)
    assert engine.state.metrics["selfcheck_consistent"] == pytest.approx(0.5)
    assert engine.state.metrics["selfcheck_pa_ncc"] == pytest.approx(0.675)
    assert engine.state.metrics["swap"] == pytest.approx(0.05)
    details = engine.state.metric_details["selfcheck_pa_ncc"].flatten().tolist()
    assert details[:2] == pytest.approx([0.95, 0.40]) and np.isnan(details[2])
    assert seen[0]["selfcheck_consistent"] == [1.0, 0.0]
    assert np.isnan(selfcheck_value({"views": {}}, "views.pa.ncc"))
    assert set(SELFCHECK_COLUMNS) >= {"selfcheck_consistent", "selfcheck_pa_ncc", "selfcheck_lateral_ncc"}


def _phantom_ct(path: Path) -> None:
    """A 64^3 5 mm chest-like phantom (HU): water body, lungs, a spine, ribs at the front."""
    a = np.full((64, 64, 64), -1000.0, np.float32)
    a[10:54, 14:50, 4:60] = 20.0
    a[16:30, 20:44, 12:56] = -800.0
    a[34:48, 20:44, 12:56] = -800.0
    a[29:35, 40:46, 4:60] = 900.0
    a[12:52, 15:17, 20:50:6] = 700.0
    affine = np.diag([-5.0, -5.0, 5.0, 1.0])
    affine[:3, 3] = [160.0, 160.0, -160.0]
    img = nib.Nifti1Image(a, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


@pytest.mark.slow
def test_evaluation_uses_the_case_geometry_and_reports_the_selfcheck(tmp_path, bundle_config, small_checkpoint):
    """A case prepared with a lateral at SID 1500 mm: evaluate.json reconstructs it with that geometry (the self-check's
    JSON records it) and writes the self-check columns per case and in the summary beside the honest metrics."""
    raw, prepared, out = tmp_path / "raw", tmp_path / "prepared", tmp_path / "eval"
    raw.mkdir()
    _phantom_ct(raw / "phantom.nii.gz")
    parser = bundle_config("prepare.json", dataset_dir=str(raw), output_dir=str(prepared), split=[0, 0, 1])
    parser["geometry"] = LATERAL_1500
    parser["chest_ct_check"] = None
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")
    assert (
        json.loads((prepared / "phantom" / "case.json").read_text())["geometry"]["views"]["lateral"]["sid_mm"] == 1500
    )
    ckpt = small_checkpoint(tmp_path / "model.pt")
    parser = bundle_config(
        "train.json",
        "evaluate.json",
        dataset_dir=str(prepared),
        ckpt_path=str(ckpt),
        output_dir=str(out),
        cache_dir=str(tmp_path / "cache"),
        eval_axes=["axial"],
        num_workers=0,
        device="cpu",
        download_example=False,
    )
    parser.get_parsed_content("initialize")
    prep = parser.get_parsed_content("validate#evaluator").prepare_batch
    assert isinstance(prep, PrepareBatchWithCaseGeometry)  # the network gets each case's geometry
    parser.get_parsed_content("run")
    report = json.loads((out / "selfcheck" / "phantom.selfcheck.json").read_text())
    assert report["geometry"]["lateral"]["sid_mm"] == 1500.0 and report["geometry"]["pa"]["sid_mm"] == 949.0
    assert (out / "selfcheck" / "phantom.selfcheck.png").is_file()
    rows = {}
    for name in ("psnr", "mae_hu", *SELFCHECK_COLUMNS):
        with open(out / f"{name}_raw.csv") as f:
            rows[name] = list(csv.reader(f))
        assert rows[name][1][0] == "phantom", rows[name]
    assert float(rows["selfcheck_pa_ncc"][1][1]) == pytest.approx(report["views"]["pa"]["ncc"], abs=1e-4)
    assert float(rows["selfcheck_consistent"][1][1]) == float(report["consistent"])
    summary = (out / "metrics.csv").read_text()
    assert "selfcheck_consistent" in summary and "psnr" in summary
