"""Evaluation: the paper-convention and honest metrics and the labelled montages.

* :mod:`.metrics` - metric functions and their Ignite handlers.
* :mod:`.montage` - labelled PNG montages (case, planes, ground truth / prediction / error, HU window).
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "PLANES": "montage",
    "label_grid": "montage",
    "reconstruction_montage": "montage",
    "HU_RANGE": "metrics",
    "PAPER_PEAK": "metrics",
    "PAPER_SSIM_DATA_RANGE": "metrics",
    "IDENTICAL_PLANE_PSNR_DB": "metrics",
    "SSIM_WIN_SIZE": "metrics",
    "AXES": "metrics",
    "METRIC_NAMES": "metrics",
    "slice_dim": "metrics",
    "bundle_to_official": "metrics",
    "official_to_bundle": "metrics",
    "official_stack": "metrics",
    "psnr_paper": "metrics",
    "ssim_paper": "metrics",
    "lpips_paper": "metrics",
    "lpips_model": "metrics",
    "psnr_true": "metrics",
    "ssim_true": "metrics",
    "mae_hu": "metrics",
    "evaluate_volume": "metrics",
    "evaluate_three_axes": "metrics",
    "paper_metrics": "metrics",
    "CTVolumeMetric": "metrics",
    "CTMetricHandler": "metrics",
    "PSNRHandler": "metrics",
    "PSNRPaperHandler": "metrics",
    "SSIMHandler": "metrics",
    "SSIMPaperHandler": "metrics",
    "MAEHUHandler": "metrics",
    "LPIPSPaperHandler": "metrics",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
