"""MONAI transforms (array + dictionary) of the data protocol.

* :mod:`.ct` - ``LoadCT(d)``, ``NormalizeCT(d)``, ``HUToInt16d`` and the MetaTensor helpers.
* :mod:`.target` - ``CTTarget(d)``: the 128^3 target in [0, 1].
* :mod:`.drr` - ``DRR(d)``: the network-input image of each view.
* :mod:`.radiograph` - reading radiographs (PNG/JPEG, NIfTI, DICOM DX/CR) into the network input.
* :mod:`.rigid_views` - on-the-fly training views: random rigid motion, views re-rendered, target moved.
* :mod:`.view_settings` - the named settings of those views (``fixed``, ``clinical``) and the acquisition draw.
* :mod:`.appearance` - a processed-radiograph appearance (scatter, noise, blur, response, unsharp mask, collimation).
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "RadiographError": "radiograph",
    "MIN_SIZE_PX": "radiograph",
    "DEFAULT_DETECTOR_SIZE_MM": "radiograph",
    "VIEW_SHAPE": "radiograph",
    "read_radiograph_array": "radiograph",
    "quantize": "radiograph",
    "postprocess_radiograph": "radiograph",
    "is_network_input": "radiograph",
    "load_radiograph": "radiograph",
    "LoadRadiograph": "radiograph",
    "LoadRadiographsd": "radiograph",
    "LoadCT": "ct",
    "LoadCTd": "ct",
    "NormalizeCT": "ct",
    "NormalizeCTd": "ct",
    "HUToInt16d": "ct",
    "as_metatensor": "ct",
    "set_spacing_meta": "ct",
    "linear_weights": "ct",
    "separable_resample": "ct",
    "lps_grid": "ct",
    "CTTarget": "target",
    "CTTargetd": "target",
    "TARGET_MODES": "target",
    "area_downsample": "target",
    "point_downsample": "target",
    "DRR": "drr",
    "DRRd": "drr",
    "RandRigidViewsd": "rigid_views",
    "RandRigidViewsDataset": "rigid_views",
    "RandRigidViewsBatch": "rigid_views",
    "move_volume": "rigid_views",
    "vary_intensity": "rigid_views",
    "GEOMETRY_KEY": "rigid_views",
    "VIEW_SETTINGS": "view_settings",
    "ACQUISITION_FIELDS": "view_settings",
    "view_setting": "view_settings",
    "draw_acquisitions": "view_settings",
    "acquisition_array": "view_settings",
    "geometry_from_array": "view_settings",
    "APPEARANCE_RANGES": "appearance",
    "APPEARANCE_FIELDS": "appearance",
    "appearance_ranges": "appearance",
    "draw_appearance": "appearance",
    "gaussian_blur": "appearance",
    "haze": "appearance",
    "detector_physics": "appearance",
    "display_processing": "appearance",
    "collimate": "appearance",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
