"""Evaluation with each case's own geometry, and the self-check as a per-case column (issue 19).

Geometry: a prepared case records the geometry its DRRs were made with (``case.json``, key ``geometry``, written by
:func:`scripts.prepare.case_writer.save_case`). A case prepared at another set-up than the network's training one
(e.g. ``configs/prepare.json`` with ``--geometry#views#lateral#sid_mm 1500``) must be reconstructed with *that*
geometry, as inference does for a DICOM with its distance tags. Three steps:

* :class:`CaseGeometryd` (dataset, before loading): the case's recorded DRR geometry as JSON text under
  ``case_geometry`` (``""`` for a raw CT, whose DRRs the chain makes with the network's geometry, or a case without a
  record). It depends on the case's files only, so a cached item stays right for any checkpoint;
* :func:`view_geometry_text`: that record against the network's geometry: ``""`` when the case's views were made as
  the network's training DRRs (:func:`scripts.projection.geometry.drr_geometry`: same directions and acquisition),
  else the network's geometry with each view's recorded acquisition (:meth:`ProjectionGeometry.with_view`);
* :class:`PrepareBatchWithCaseGeometry` (the evaluator's ``prepare_batch``) hands it to the network, and
  :class:`CaseViewGeometryd` (post-processing) gives it to the self-check (:class:`scripts.inference.selfcheck.SelfCheckd`).

Self-check column: :class:`SelfCheckMetricHandler` puts one value of each case's self-check (``consistent`` as 0/1,
a view's ``ncc`` / ``ssim`` / ``gc``, or a case score of :data:`scripts.inference.selfcheck.SCORE_KEYS`) among the
evaluator's metrics, so MONAI's ``MetricsSaver`` writes it per case (``<name>_raw.csv``) and in the summary, beside
the honest metrics, and :class:`scripts.handlers.CaseMetricsLog` logs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.transforms import MapTransform
from scripts.evaluation.metric_handler import CaseValuesMixin, finite_mean
from scripts.inference.view_geometry import PrepareBatchWithGeometry, batch_geometry
from scripts.projection.geometry import VIEW_ACQUISITION_FIELDS, ProjectionGeometry, drr_geometry

__all__ = [
    "CaseGeometryd",
    "view_geometry_text",
    "CaseViewGeometryd",
    "PrepareBatchWithCaseGeometry",
    "SELFCHECK_COLUMNS",
    "selfcheck_value",
    "SelfCheckValue",
    "SelfCheckMetricHandler",
]

#: The self-check columns of ``configs/evaluate.json``: metric name -> path in the self-check result.
SELFCHECK_COLUMNS: dict[str, str] = {
    "selfcheck_consistent": "consistent",
    "selfcheck_pa_ncc": "views.pa.ncc",
    "selfcheck_lateral_ncc": "views.lateral.ncc",
    "selfcheck_pa_ssim": "views.pa.ssim",
    "selfcheck_lateral_ssim": "views.lateral.ssim",
    "selfcheck_swap_margin": "scores.swap_margin",
    "selfcheck_mirror_margin": "scores.mirror_margin",
}


class CaseGeometryd(MapTransform):
    """Dataset transform: ``case_geometry`` = the JSON text of the DRR geometry recorded in ``case.json`` beside the
    item's ``key`` image (a prepared case's ``pa.png``), or ``""`` (no file path, no record).

    Args:
        keys: the view key whose file's folder holds ``case.json`` (default ``pa``).
        output_key: where the text goes.
    """

    def __init__(self, keys: KeysCollection = "pa", output_key: str = "case_geometry") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        text = ""
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                info = Path(d[key]).parent / "case.json"
                if info.is_file():
                    geometry = json.loads(info.read_text()).get("geometry")
                    text = json.dumps(geometry) if geometry else ""
            break
        d[self.output_key] = text
        return d


def _same_view(a: ProjectionGeometry, b: ProjectionGeometry, view: str, tol: float = 1e-6) -> bool:
    va, vb = a.view(view), b.view(view)
    vectors = [*va.normal, *va.col, *va.row], [*vb.normal, *vb.col, *vb.row]
    acq = [x for f in a.view_acquisition(view) for x in (f if isinstance(f, tuple) else (f,))]
    acq_b = [x for f in b.view_acquisition(view) for x in (f if isinstance(f, tuple) else (f,))]
    return all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip([*vectors[0], *acq], [*vectors[1], *acq_b]))


def view_geometry_text(case_geometry: str | Mapping | None, network_geometry: ProjectionGeometry) -> str:
    """``""`` when the case's recorded DRR geometry is the network's training one (every view: same directions,
    SAD, SID, detector size and offset as :func:`drr_geometry` of ``network_geometry``), else the JSON text of
    ``network_geometry`` with each view's recorded acquisition and directions (the item's ``view_geometry``).

    Raises:
        ValueError: the record lacks one of the network's views."""
    if not case_geometry:
        return ""
    record = json.loads(case_geometry) if isinstance(case_geometry, str) else dict(case_geometry)
    case = ProjectionGeometry(**record)
    trained = drr_geometry(network_geometry)
    missing = [v for v in network_geometry.view_names if v not in case.views]
    if missing:
        raise ValueError(f"the case's recorded DRR geometry has no view {missing}: it has {list(case.views)}")
    if all(_same_view(case, trained, v) for v in network_geometry.view_names):
        return ""
    out = network_geometry
    for v in network_geometry.view_names:
        src = case.view(v)
        fields = dict(zip(VIEW_ACQUISITION_FIELDS, case.view_acquisition(v)))
        out = out.with_view(v, normal=src.normal, col=src.col, row=src.row, **fields)
    return json.dumps(out.to_dict())


class CaseViewGeometryd(MapTransform):
    """Post-processing: ``view_geometry`` from ``case_geometry`` (:func:`view_geometry_text`) for the self-check."""

    def __init__(
        self, geometry: ProjectionGeometry, keys: KeysCollection = "case_geometry", output_key: str = "view_geometry"
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.geometry, self.output_key = geometry, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = view_geometry_text(d[key], self.geometry)
        return d


class PrepareBatchWithCaseGeometry(PrepareBatchWithGeometry):
    """The evaluator's ``prepare_batch``: each case's recorded geometry (``case_geometry``, see
    :func:`view_geometry_text`) handed to the network as the keyword ``geometry`` (None when every case of the batch
    was made at the network's training set-up).

    Args:
        base: the network's geometry.
        case_key: the batch key of the recorded geometries (JSON texts).
    """

    def __init__(self, base: ProjectionGeometry, case_key: str = "case_geometry") -> None:
        super().__init__(geometry_key=case_key, base=base)

    def __call__(
        self, batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ):
        texts = batchdata.get(self.geometry_key)
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        resolved = [view_geometry_text(t, self.base) for t in texts]  # type: ignore[arg-type]
        image, label, args, _ = super().__call__(
            {k: v for k, v in batchdata.items() if k != self.geometry_key}, device, non_blocking, **kwargs
        )
        geometry = batch_geometry(resolved, self.base) if resolved else None
        return image, label, args, ({} if geometry is None else {"geometry": geometry})


def selfcheck_value(result: Mapping[str, Any] | None, path: str) -> float:
    """One value of a self-check result (:func:`scripts.inference.selfcheck.self_check`) by a dotted ``path``
    (``"consistent"`` -> 1.0 / 0.0, ``"views.pa.ncc"``, ``"scores.swap_margin"``); NaN when absent."""
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return math.nan
        value = value[part]
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class SelfCheckValue:
    """``output_transform`` of :class:`SelfCheckMetricHandler`: the evaluator's (decollated) output -> ``(values,
    values)``, one ``(1,)`` tensor per case of ``selfcheck_value(case["selfcheck"], path)``."""

    def __init__(self, path: str, key: str = "selfcheck") -> None:
        self.path, self.key = path, key

    def __call__(self, output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        items = output if isinstance(output, Sequence) else [output]
        values = [torch.tensor([selfcheck_value(o.get(self.key) if isinstance(o, Mapping) else None, self.path)])
                  for o in items]  # fmt: skip
        return values, values


class _Value(CumulativeIterationMetric):
    """The per-case values as given (``y_pred`` ``(B, 1)``); :meth:`aggregate` is the mean of the finite ones."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return y_pred.detach().double().reshape(-1, 1)

    def aggregate(self) -> torch.Tensor:
        return finite_mean(self.get_buffer())


class SelfCheckMetricHandler(CaseValuesMixin, IgniteMetricHandler):
    """One self-check value per case among the evaluator's metrics (module docstring); its mean over the cases is
    the summary (for ``consistent``: the share of cases found consistent).

    Args:
        path: the value's path in the self-check result (:func:`selfcheck_value`; see :data:`SELFCHECK_COLUMNS`).
        key: the item key of the self-check result (written by :class:`scripts.inference.selfcheck.SelfCheckd` in
            the evaluator's post-processing).
        save_details: keep every case's value for ``MetricsSaver`` (default True).
    """

    def __init__(self, path: str, key: str = "selfcheck", save_details: bool = True) -> None:
        super().__init__(metric_fn=_Value(), output_transform=SelfCheckValue(path, key), save_details=save_details)
