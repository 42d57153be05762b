"""Inference: how the network is called and what is written.

* :mod:`.inferers` - how the trainer, evaluator and inference call the network (slices, volumes, zoom).
* :mod:`.items` - the items to reconstruct and the NIfTI writer with the output frame.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "SliceInferer": "inferers",
    "ReconstructionInferer": "inferers",
    "ZoomInferer": "inferers",
    "autocast_dtype": "inferers",
    "inference_items": "items",
    "reconstruction_affine": "items",
    "zoom_affine": "items",
    "check_zoom": "items",
    "SaveReconstructiond": "items",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
