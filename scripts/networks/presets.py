"""Model presets as data, and the factory the configs call (``scripts.networks.build_perx2ct``).

Sizes count every parameter of the built model (unused ResNet layers are not built); FLOPs are
counted by ``torch.utils.flop_counter`` on the meta device (multiply-add = 2 FLOP, attention included)
for one 128^3 volume = encoder once + 128 slices.

* ``paper``: ResNet-101 to layer2 (1,444,928) + VQGAN decoder (width 128, (1, 2, 4), 2 res blocks,
  attention at 32 x 32; 41,108,481 of which conv_in 1087 -> 512 is 5,009,408) = 42,553,409 parameters
  (paper: 42.6 M). 184.2 GFLOP (92.1 GMAC) per slice, 23.6 TFLOP per volume.
* ``paper_global``: adds the global branch (layer3 blocks 0..21 + block 22's 1x1 conv to 256 channels,
  25,235,968; conv_in grows by 512 x 512 x 9 = 2,359,296 for the 2 x 256 extra inputs) and zoom-in
  training: 70,148,673 parameters (paper: about 70 M). 24.2 TFLOP per volume.
* ``small``: a CPU-sized model for tests and quick checks (basic-block ResNet [1, 1] with widths
  32/64, decoder width 16, one res block per level + 1, no attention at 32 x 32 apart from the mid
  block): 611,585 parameters, 0.32 TFLOP per volume (1/73 of ``paper``); about 2.5 s per volume on
  two CPU cores.

All presets use the official positional encoding (NeRF embedder without pi on mm / 320, see
:class:`~scripts.networks.perx2ct.PositionalEncoding`); the ``small`` preset too (nothing argues for the
earlier pi-scaled encoding, whose highest band aliased on the 2.5 mm grid).

Legacy presets for the authors' published weights (``python -m scripts import_official``), same keys and
shapes as ``paper`` / ``paper_global``: ``paper_official`` and ``paper_global_official`` add the official
code's conventions as data: the official world axes of the positional encoding, the official slice
layout, the official image orientation, 8-bit inputs without re-normalisation, and the official
sampling (``align_corners=True``, no visibility mask); use them with the geometry preset
``perx2ct_official`` (the official pinhole camera).

Every preset trains the encoder's stem (conv1/bn1), as the official run did: the official code freezes it, but
PyTorch Lightning 1.0.8's ``toggle_optimizer`` undoes that freeze before every step (see ``freeze_stem`` in
:class:`~scripts.networks.encoder.ResNetEncoder`). The override ``encoder={"freeze_stem": True}`` of
:func:`build_perx2ct` (command line: ``--network_def#encoder "{'freeze_stem': True}"``) freezes it.
"""

from __future__ import annotations

import copy
from typing import Any

from scripts.networks.encoder import ENCODER_WEIGHTS_COMMAND, ResNetEncoder, random_encoder_warning
from scripts.networks.perx2ct import PerX2CT
from scripts.networks.sampler import PerspectiveSampler

__all__ = ["MODEL_PRESETS", "LEGACY_PRESETS", "build_perx2ct", "random_encoder_warning", "ENCODER_WEIGHTS_COMMAND"]

_OFFICIAL = {
    "positional_encoding": {"frequencies": 10, "unit": 1.0, "pi": False, "axes": [[0, 0, -1], [0, 1, 0], [1, 0, 0]]},
    "slice_layout": "official",
    "view_transforms": {"pa": "fliplr", "lateral": "rot90"},
    "input_intensity": "8bit",
    "sampler_options": {"align_corners": True, "visibility_mask": False},
}

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "encoder": {"block": "bottleneck", "layers": (3, 4, 23), "widths": (64, 128, 256), "global_features": False},
        "decoder_channels": 128,
        "channel_mult": (1, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (32,),
        "zoom_in": False,
    },
    "paper_global": {
        "encoder": {"block": "bottleneck", "layers": (3, 4, 23), "widths": (64, 128, 256), "global_features": True},
        "decoder_channels": 128,
        "channel_mult": (1, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (32,),
        "zoom_in": True,
    },
    "small": {
        "encoder": {"block": "basic", "layers": (1, 1), "widths": (32, 64), "global_features": False},
        "decoder_channels": 16,
        "channel_mult": (1, 2, 4),
        "num_res_blocks": 1,
        "attn_resolutions": (),
        "zoom_in": False,
    },
}
MODEL_PRESETS["paper_official"] = {**MODEL_PRESETS["paper"], **_OFFICIAL}
MODEL_PRESETS["paper_global_official"] = {**MODEL_PRESETS["paper_global"], **_OFFICIAL}

#: The model preset of the official code's conventions for each preset with the same weights layout.
LEGACY_PRESETS = {"paper": "paper_official", "paper_global": "paper_global_official"}


def build_perx2ct(
    preset: str, sampler: PerspectiveSampler, encoder_weights: str | None = None, **overrides: Any
) -> PerX2CT:
    """A :class:`PerX2CT` from a preset of :data:`MODEL_PRESETS`; ``overrides`` replace preset fields
    (e.g. ``slice_batch=32``; ``encoder`` and ``sampler_options`` are merged into the preset's dicts);
    ``encoder_weights`` is an optional local ImageNet ResNet state dict. A preset's ``sampler_options``
    (e.g. ``align_corners``) give the network a copy of ``sampler`` with those options."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model_preset {preset!r}; choose one of {sorted(MODEL_PRESETS)}")
    cfg = copy.deepcopy(MODEL_PRESETS[preset])
    enc_cfg = {**cfg.pop("encoder"), **overrides.pop("encoder", {})}
    sampler_options = {**cfg.pop("sampler_options", {}), **overrides.pop("sampler_options", {})}
    cfg.update(overrides)
    if sampler_options and sampler.options() != {**sampler.options(), **sampler_options}:
        sampler = sampler.with_options(**sampler_options)
    encoder = ResNetEncoder(**enc_cfg, weights=encoder_weights)
    return PerX2CT(sampler=sampler, encoder=encoder, **cfg)
