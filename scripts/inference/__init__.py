"""Inference: how the network is called and what is written.

* :mod:`.inferers` - how the trainer, evaluator and inference call the network (slices, volumes, zoom).
* :mod:`.items` - the items to reconstruct and the NIfTI writer with the output frame.
* :mod:`.dicom_ct_series` - a reconstruction as a DICOM CT series of the radiographs' study (for a PACS).
* :mod:`.view_plausibility` - are the inputs a PA and a lateral chest radiograph, in order and not mirrored.
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
    "ct_series": "dicom_ct_series",
    "write_ct_series": "dicom_ct_series",
    "views_plausible": "view_plausibility",
    "view_measures": "view_plausibility",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
