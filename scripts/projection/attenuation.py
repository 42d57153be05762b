"""plastimatch's default HU -> attenuation conversion, shared by both DRR renderers.

``mu = mu_w * (1 + HU / 1000)`` per cm where ``HU > -800``, else 0, with ``mu_w = 0.022`` per cm. The often quoted
``mu_w = 0.0209`` is not what plastimatch 1.9.4 uses; our measurement: through water slabs of n voxels inside a larger
volume its line integral is ``0.022 * n * spacing`` (e.g. 10 cm of water -> 0.2200, not 0.209), except that the last
voxel before the volume's exit face is dropped, so a water cube of 20 voxels that fills the whole volume gives
19 x 0.022 = 20 x 0.0209, which is probably where 0.0209 came from. On real chest CTs the best-fitting scale between
an ITK cast with 0.0209 and plastimatch is 1.057 (MAD 2-3 % of the maximum); with 0.022 the MAD is 0.3-0.5 %. The
``-800`` HU cut-off was confirmed (-801 -> 0, -799 -> 0.2 mu_w).
"""

from __future__ import annotations

import numpy as np
from scripts.utils.optional_torch import torch_of

__all__ = ["MU_WATER_PER_CM", "HU_THRESHOLD", "hu_to_attenuation"]

#: Linear attenuation of water (per cm) of plastimatch 1.9.4's default HU conversion (measured; see above).
MU_WATER_PER_CM = 0.022
#: plastimatch's default conversion gives zero attenuation at or below this HU.
HU_THRESHOLD = -800.0


def hu_to_attenuation(volume_hu, mu_water_per_cm: float = MU_WATER_PER_CM, hu_threshold: float = HU_THRESHOLD):
    """plastimatch's default HU -> linear attenuation (per cm): ``mu_w * (1 + HU/1000)`` where
    ``HU > hu_threshold``, else 0. Same shape; numpy in -> float32 numpy; torch in -> torch (same dtype
    and device for floating input, float32 otherwise; differentiable where ``HU > hu_threshold``)."""
    torch = torch_of(volume_hu)  # numpy callers (the DRR command) never import torch
    if torch is not None:
        hu = volume_hu if volume_hu.is_floating_point() else volume_hu.float()
        mu = mu_water_per_cm * (1.0 + hu / 1000.0)
        return torch.where(hu > hu_threshold, mu, torch.zeros_like(mu))
    hu = np.asarray(volume_hu, dtype=np.float32)
    # mu_w * (1 + HU / 1000) in float32, the same operations in the same order as ever, in one buffer that keeps
    # the input's memory order (a Fortran-ordered CT stays Fortran-ordered: ITK's layout)
    mu = np.array(hu, dtype=np.float32, order="K")
    mu /= np.float32(1000.0)
    mu += np.float32(1.0)
    mu *= np.float32(mu_water_per_cm)
    np.copyto(mu, np.float32(0.0), where=~(hu > np.float32(hu_threshold)))
    return mu
