"""Evaluation: the paper-convention and honest metrics, their one Ignite handler, and the labelled montages.

* :mod:`.paper_metrics` - the official metric code reproduced: the official frame's stacks, ``psnr_paper``,
  ``ssim_paper``, ``lpips_paper``.
* :mod:`.honest_metrics` - PSNR with the true peak, SSIM with data range 1, MAE in HU (MONAI's metrics where they
  fit).
* :mod:`.metric_handler` - one metric class and one Ignite handler, parameterised by the metric's name, for the
  evaluator's key and additional metrics.
* :mod:`.case_checks` - each case's own DRR geometry handed to the network, and the self-check as per-case
  columns.
* :mod:`.montage` - labelled PNG montages (case, planes, ground truth / prediction / error, HU window).
* :mod:`.volumes` - how the metric functions read a volume and a (prediction, target) pair.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "psnr_paper": "paper_metrics",
    "ssim_paper": "paper_metrics",
    "lpips_paper": "paper_metrics",
    "lpips_model": "paper_metrics",
    "psnr_true": "honest_metrics",
    "ssim_true": "honest_metrics",
    "mae_hu": "honest_metrics",
    "METRICS": "metric_handler",
    "CTVolumeMetric": "metric_handler",
    "CaseValuesMixin": "metric_handler",
    "CTMetricHandler": "metric_handler",
    "CaseGeometryd": "case_checks",
    "view_geometry_text": "case_checks",
    "CaseViewGeometryd": "case_checks",
    "PrepareBatchWithCaseGeometry": "case_checks",
    "SELFCHECK_COLUMNS": "case_checks",
    "selfcheck_value": "case_checks",
    "SelfCheckValue": "case_checks",
    "SelfCheckMetricHandler": "case_checks",
    "PLANES": "montage",
    "label_grid": "montage",
    "reconstruction_montage": "montage",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
