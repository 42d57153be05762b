"""Cone-beam projection: the one geometry object and the renderers that use it.

* :mod:`.geometry` - ``ProjectionGeometry``: source, detector and views; shared by DRRs and the network's sampler.
* :mod:`.attenuation` - plastimatch's HU -> attenuation conversion, shared by both renderers.
* :mod:`.itk_renderer` - the reference renderer (ITK ray casting).
* :mod:`.torch_renderer` - the batched, differentiable torch renderer (CPU/CUDA, rigid motion).
* :mod:`.drr` - ``render_drr`` picks either renderer; ``python -m scripts drr``.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "View": "geometry",
    "ProjectionGeometry": "geometry",
    "GEOMETRY_PRESETS": "geometry",
    "VIEW_PRESETS": "geometry",
    "MU_WATER_PER_CM": "attenuation",
    "HU_THRESHOLD": "attenuation",
    "hu_to_attenuation": "attenuation",
    "volume_centre_mm": "itk_renderer",
    "detector_affine_lps": "itk_renderer",
    "ray_cast_drr": "itk_renderer",
    "DEFAULT_MAX_SAMPLES": "torch_renderer",
    "project": "torch_renderer",
    "project_hu": "torch_renderer",
    "Projector": "torch_renderer",
    "rigid_motion": "torch_renderer",
    "BACKENDS": "drr",
    "render_drr": "drr",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
