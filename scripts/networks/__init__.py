"""PerX2CT networks: the perspective sampler, the encoder, the decoder and the model presets."""

from scripts.networks.decoder import Decoder
from scripts.networks.encoder import ResNetEncoder
from scripts.networks.perx2ct import PerX2CT, PositionalEncoding
from scripts.networks.presets import LEGACY_PRESETS, MODEL_PRESETS, build_perx2ct, random_encoder_warning
from scripts.networks.sampler import PerspectiveSampler

__all__ = [
    "Decoder",
    "ResNetEncoder",
    "PerX2CT",
    "PositionalEncoding",
    "PerspectiveSampler",
    "MODEL_PRESETS",
    "LEGACY_PRESETS",
    "build_perx2ct",
    "random_encoder_warning",
]
