"""2D decoder of the VQGAN family (Esser et al. 2021) turning a grid of point features into a CT slice.

Layout (as the taming-transformers decoder, without quantiser): ``conv_in`` -> mid block (residual,
self-attention, residual) -> one level per channel multiplier, from the widest at the input
resolution, each with ``num_res_blocks + 1`` residual blocks (self-attention after each where the
resolution is in ``attn_resolutions``) and a 2x nearest upsampling + conv except the last ->
GroupNorm, swish, ``conv_out``. With ``channel_mult=(1, 2, 4)`` a 32 x 32 input becomes 128 x 128.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Decoder"]


def _norm(channels: int) -> nn.GroupNorm:
    # 32 groups as VQGAN where the width allows; the largest divisor of the width otherwise
    return nn.GroupNorm(num_groups=math.gcd(32, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(y).reshape(b, c, h * w).transpose(1, 2)
        v = self.v(y).reshape(b, c, h * w).transpose(1, 2)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """(B, in_channels, r, r) point features -> (B, out_channels, r * 2^(L-1), r * 2^(L-1)).

    Args:
        in_channels: per-point feature channels (1087 for the paper's base model).
        out_channels: output channels (1: a CT slice).
        base_channels: width of the finest level (128 in the paper).
        channel_mult: width multipliers from finest to coarsest level ((1, 2, 4): two upsamplings).
        num_res_blocks: residual blocks per level (the coarse-to-fine path uses one more, as VQGAN).
        attn_resolutions: input-grid sizes at which self-attention is applied (paper: (32,)).
        input_resolution: side of the input grid (32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (32,),
        input_resolution: int = 32,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mult)
        block_in = base_channels * mults[-1]
        self.conv_in = nn.Conv2d(in_channels, block_in, 3, padding=1)
        self.mid = nn.Sequential(ResnetBlock(block_in, block_in), AttnBlock(block_in), ResnetBlock(block_in, block_in))
        levels = []
        res = int(input_resolution)
        for level in reversed(range(len(mults))):
            block_out = base_channels * mults[level]
            layers: list[nn.Module] = []
            for _ in range(num_res_blocks + 1):
                layers.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in tuple(attn_resolutions):
                    layers.append(AttnBlock(block_in))
            if level != 0:
                layers.append(Upsample(block_in))
                res *= 2
            levels.append(nn.Sequential(*layers))
        self.up = nn.Sequential(*levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)
        self.upsampling = 2 ** (len(mults) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))
