"""PerX2CT networks and their weights.

* :mod:`.sampler` - ``PerspectiveSampler``: each 3D point's features where it projects on each view.
* :mod:`.encoder` / :mod:`.decoder` - the ResNet encoder of the views and the 2D decoder of a slice's features.
* :mod:`.perx2ct` - ``PerX2CT``: positional encoding, sampling and decoding of slices, volumes and zoomed regions.
* :mod:`.presets` - the model presets (``small``, ``paper``, ``paper_global``, the legacy ones) as data.
* :mod:`.checkpoint` - the checkpoint sidecar (which network and recipe a weights file holds) and its checks.
* :mod:`.import_official` - the authors' checkpoints converted to this bundle's network.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "Decoder": "decoder",
    "ResNetEncoder": "encoder",
    "PerX2CT": "perx2ct",
    "PositionalEncoding": "perx2ct",
    "PerspectiveSampler": "sampler",
    "MODEL_PRESETS": "presets",
    "LEGACY_PRESETS": "presets",
    "build_perx2ct": "presets",
    "random_encoder_warning": "encoder",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
