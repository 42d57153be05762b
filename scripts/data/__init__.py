"""Datasets of the workflows.

* :mod:`.case_discovery` - which entries of a raw dataset folder are cases, which are skipped and why.
* :mod:`.datalist` - the training / validation / test split and ``datalist.json``.
* :mod:`.datasets` - training/evaluation datalists (prepared cases or raw CTs through prepare's chain).
* :mod:`.slice_sampling` - the training samples: per-case cache, seeded slice sampler, 1 mm ground truth.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "VOLUME_SUFFIXES": "case_discovery",
    "DiscoveryError": "case_discovery",
    "SkippedEntry": "case_discovery",
    "safe_case_id": "case_discovery",
    "scan_dataset": "case_discovery",
    "discover_cases": "case_discovery",
    "SPLIT_NAMES": "datalist",
    "SplitError": "datalist",
    "check_split": "datalist",
    "split_counts": "datalist",
    "read_split_file": "datalist",
    "assign_split": "datalist",
    "datalist_entry": "datalist",
    "build_datalist": "datalist",
    "load_datalist": "datasets",
    "require_cases": "datasets",
    "require_file": "datasets",
    "validation_cases": "datasets",
    "bundle_component": "datasets",
    "CachedCase": "slice_sampling",
    "cache_cases": "slice_sampling",
    "SliceDataset": "slice_sampling",
    "SliceSampler": "slice_sampling",
    "SliceBatch": "slice_sampling",
    "official_zoom_box": "slice_sampling",
    "official_zoom_range": "slice_sampling",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
