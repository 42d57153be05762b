"""Model presets as data, and the factory the configs call (``scripts.networks.build_perx2ct``).

* ``paper``: ResNet-101 to layer2 + VQGAN decoder (width 128, (1, 2, 4), 2 res blocks, attention at
  32 x 32): 42.6 M parameters, as the paper's base model.
* ``paper_global``: adds the layer3 global branch (2 x 256 values per point) and zoom-in training:
  about 71 M parameters (paper: about 70 M).
* ``small``: a CPU-sized model for tests and quick checks (ResNet with basic blocks, decoder width 24,
  no attention at 32 x 32): about 1.2 M parameters and about 1/35 of the paper model's FLOPs.
"""

from __future__ import annotations

import copy
from typing import Any

from scripts.networks.encoder import ResNetEncoder
from scripts.networks.perx2ct import PerX2CT
from scripts.networks.sampler import PerspectiveSampler

__all__ = ["MODEL_PRESETS", "build_perx2ct"]

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "encoder": {"block": "bottleneck", "layers": (3, 4, 23), "widths": (64, 128, 256), "global_features": False},
        "decoder_channels": 128, "channel_mult": (1, 2, 4), "num_res_blocks": 2, "attn_resolutions": (32,),
        "zoom_in": False,
    },
    "paper_global": {
        "encoder": {"block": "bottleneck", "layers": (3, 4, 23), "widths": (64, 128, 256), "global_features": True},
        "decoder_channels": 128, "channel_mult": (1, 2, 4), "num_res_blocks": 2, "attn_resolutions": (32,),
        "zoom_in": True,
    },
    "small": {
        "encoder": {"block": "basic", "layers": (1, 1), "widths": (32, 64), "global_features": False},
        "decoder_channels": 24, "channel_mult": (1, 2, 4), "num_res_blocks": 1, "attn_resolutions": (),
        "zoom_in": False,
    },
}


def build_perx2ct(preset: str, sampler: PerspectiveSampler, encoder_weights: str | None = None, **overrides: Any) -> PerX2CT:
    """A :class:`PerX2CT` from a preset of :data:`MODEL_PRESETS`; ``overrides`` replace preset fields
    (e.g. ``slice_batch=32``); ``encoder_weights`` is an optional local ImageNet ResNet state dict."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model_preset {preset!r}; choose one of {sorted(MODEL_PRESETS)}")
    cfg = copy.deepcopy(MODEL_PRESETS[preset])
    enc_cfg = {**cfg.pop("encoder"), **overrides.pop("encoder", {})}
    cfg.update(overrides)
    encoder = ResNetEncoder(**enc_cfg, weights=encoder_weights)
    return PerX2CT(sampler=sampler, encoder=encoder, **cfg)
