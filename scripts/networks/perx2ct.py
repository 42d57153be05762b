"""PerX2CT: CT slices from two X-rays by perspective sampling of image features.

For one output slice, a 32 x 32 grid of 3D query points is laid in the slice's plane (or in a zoom-in
sub-square of it). Each point gets ``[PA features (C), lateral features (C), positional encoding (63)
(, global features 2 x G)]`` (paper: 512 + 512 + 63 = 1087 channels, 1599 with 2 x 256 global), the
PA/lateral features sampled by :class:`PerspectiveSampler` where the point projects on each X-ray.
The 2D decoder turns that (F, 32, 32) grid into a 128 x 128 slice. No quantiser, no MLP between
sampling and decoder.

API: :meth:`PerX2CT.encode` (encoder once per case), :meth:`PerX2CT.render_slices` /
:meth:`PerX2CT.forward_slices` (one named-axis slice per case), :meth:`PerX2CT.render` /
``forward(image, slice_axis, slice_index, zoom_box)`` (several slices per case, axis codes; the
trainer's path), :meth:`PerX2CT.reconstruct` / ``forward(image)`` (whole volumes, encoder once).

Frames and shapes:

* ``image``: (B, 2, 128, 128) float in [0, 1]: channel 0 PA, channel 1 lateral, as the DRRs
  (rows head to feet; see :mod:`scripts.geometry` for the left-right convention).
* volume: (B, 1, 128, 128, 128), array axes (x, y, z) = LPS, voxel (i, j, k) centred at
  ``((i, j, k) - 63.5) * 2.5`` mm from the isocentre; values in the target scale
  ((HU + 1024) / 2500): the decoder ends in a linear conv (no sigmoid, no clamp), so values may stray
  slightly outside [0, 1]; clamp downstream if needed.
* slices: see :mod:`scripts.slicing` (axis codes 0 axial, 1 coronal, 2 sagittal; zoom boxes
  ``(row0, col0, size)`` in voxels of the 128 grid).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scripts.networks.decoder import Decoder
from scripts.networks.encoder import ResNetEncoder
from scripts.networks.sampler import PerspectiveSampler
from scripts.slicing import axis_code, full_boxes, slice_positions_flat, voxel_to_mm

__all__ = ["PerX2CT", "PositionalEncoding"]


class PositionalEncoding(nn.Module):
    """NeRF encoding of positions in [-1, 1]: ``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < ``frequencies``.

    (..., 3) -> (..., 3 + 6 * frequencies): 63 values for 10 frequencies.
    """

    def __init__(self, frequencies: int = 10) -> None:
        super().__init__()
        self.register_buffer("bands", (2.0 ** torch.arange(frequencies, dtype=torch.float32)) * math.pi, persistent=False)
        self.out_channels = 3 + 6 * frequencies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = (x[..., None] * self.bands.to(x.dtype)).flatten(-2)  # (..., 3 * F)
        return torch.cat((x, torch.sin(xb), torch.cos(xb)), dim=-1)


class PerX2CT(nn.Module):
    """The PerX2CT network (see the module docstring).

    Args:
        sampler: the perspective-sampling layer (built from the DRRs' geometry), handed in by the config.
        encoder: the shared 2D encoder (:class:`ResNetEncoder`).
        decoder_channels, channel_mult, num_res_blocks, attn_resolutions: the decoder (paper: 128,
            (1, 2, 4), 2, (32,)).
        pe_frequencies: NeRF frequencies (10 -> 63 values).
        query_grid: query points per slice side (32).
        volume_shape: voxels per side of the output cube (128).
        volume_size_mm: side of the output cube in mm (320).
        zoom_in: train with zoomed sub-squares (the paper's global variant).
        slice_batch: slices rendered per decoder call when reconstructing a volume (memory vs speed).
    """

    def __init__(
        self,
        sampler: PerspectiveSampler,
        encoder: ResNetEncoder,
        decoder_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (32,),
        pe_frequencies: int = 10,
        query_grid: int = 32,
        volume_shape: int = 128,
        volume_size_mm: float = 320.0,
        zoom_in: bool = False,
        slice_batch: int = 16,
    ) -> None:
        super().__init__()
        if not isinstance(sampler, PerspectiveSampler):
            raise TypeError(f"sampler must be a PerspectiveSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.encoder = encoder
        self.pe = PositionalEncoding(pe_frequencies)
        self.num_views = sampler.num_views
        self.global_features = encoder.global_features
        self.global_dim = encoder.global_channels  # 256 per view for ResNet-101, 0 without the global branch
        self.point_channels = self.pe.out_channels + self.num_views * (encoder.local_channels + self.global_dim)
        self.decoder = Decoder(
            self.point_channels, 1, decoder_channels, channel_mult, num_res_blocks, attn_resolutions, query_grid
        )
        self.query_grid = int(query_grid)
        self.output_size = self.query_grid * self.decoder.upsampling
        self.volume_shape = int(volume_shape)
        if self.output_size != self.volume_shape:
            raise ValueError(
                f"a rendered slice has {self.output_size} pixels per side (query_grid {query_grid} x "
                f"{self.decoder.upsampling}) but the volume has {self.volume_shape}: they must match"
            )
        self.volume_size_mm = float(volume_size_mm)
        self.zoom_in = bool(zoom_in)
        self.slice_batch = int(slice_batch)

    # ------------------------------------------------------------------ stages
    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, V, H, W) -> (per-view local maps [(B, C, H/8, W/8)] * V, global (B, V * G) or (B, 0)).

        Both views go through the shared encoder in one batch: the encoder runs once per case.
        """
        if image.ndim != 4 or image.shape[1] != self.num_views:
            raise ValueError(f"image must be (B, {self.num_views}, H, W), got {list(image.shape)}")
        b = image.shape[0]
        x = image.transpose(0, 1).reshape(self.num_views * b, 1, image.shape[2], image.shape[3])
        local, glob = self.encoder(x)
        maps = list(local.reshape(self.num_views, b, local.shape[1], local.shape[2], local.shape[3]).unbind(0))
        if self.global_features:
            g = glob.reshape(self.num_views, b, self.global_dim)
            glob = g.transpose(0, 1).reshape(b, self.num_views * self.global_dim)
        else:
            glob = image.new_zeros(b, 0)
        return maps, glob

    def render(
        self, maps: list[torch.Tensor], glob: torch.Tensor, slice_axis: torch.Tensor, slice_index: torch.Tensor,
        zoom_box: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Slices of encoded cases: axis/index (B, S), zoom_box (B, S, 3) or None -> (B, S, 128, 128)."""
        b, s = slice_index.shape[0], slice_index.shape[1]
        g = self.query_grid
        n = b * s
        box = full_boxes(n, self.volume_shape, slice_index.device) if zoom_box is None else zoom_box.reshape(n, 3)
        vox = slice_positions_flat(slice_axis.reshape(n), slice_index.reshape(n), box, g, self.volume_shape)
        mm = voxel_to_mm(vox, self.volume_shape, self.volume_size_mm)  # (n, g, g, 3) relative to the isocentre
        points = mm.reshape(b, s * g * g, 3)
        feats = [self.sampler(maps, points), self.pe(points / (self.volume_size_mm / 2))]
        if self.global_features:
            feats.append(glob[:, None, :].expand(b, s * g * g, glob.shape[1]))
        x = torch.cat(feats, dim=-1).to(maps[0].dtype)  # (B, S*g*g, F)
        x = x.reshape(n, g, g, self.point_channels).permute(0, 3, 1, 2)
        out = self.decoder(x)  # (n, 1, 128, 128)
        return out.reshape(b, s, out.shape[-2], out.shape[-1])

    def render_slices(
        self, features: tuple[list[torch.Tensor], torch.Tensor], axis: str, index: torch.Tensor,
        zoom_box: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One slice per case from already encoded cases (the encoder is not run again).

        Args:
            features: the output of :meth:`encode`.
            axis: ``"axial"`` (fixes k; rows i, cols j), ``"coronal"`` (fixes j; rows i, cols k) or
                ``"sagittal"`` (fixes i; rows j, cols k), so that e.g. the axial slice at ``k``
                equals ``forward(image)[:, :, :, :, k]``.
            index: (B,) position along the fixed axis in voxels of the 128 grid (float allowed; integers
                are voxel centres).
            zoom_box: None for whole slices, or (B, 3) ``(row0, col0, size)`` in voxels of the 128 grid:
                the outer edges of the in-plane sub-square to render (whole slice: ``(0, 0, 128)``; the
                paper zooms with sides 32..128). The 32 x 32 query grid covers that square, so the
                decoder renders it at 128 x 128 (up to 4x finer). See :mod:`scripts.slicing`.

        Returns:
            (B, 1, 128, 128): rows and columns are the slice's two in-plane array axes, in array order.
        """
        maps, glob = features
        b = maps[0].shape[0]
        if index.shape != (b,):
            raise ValueError(f"index must have shape ({b},) (one slice per case), got {list(index.shape)}")
        if zoom_box is not None and zoom_box.shape != (b, 3):
            raise ValueError(f"zoom_box must be ({b}, 3) as (row0, col0, size) voxels, got {list(zoom_box.shape)}")
        code = axis_code(axis)
        ax = torch.full((b, 1), code, dtype=torch.long, device=index.device)
        box = None if zoom_box is None else zoom_box.reshape(b, 1, 3)
        return self.render(maps, glob, ax, index.reshape(b, 1).to(torch.float32), box)

    def forward_slices(
        self, image: torch.Tensor, axis: str, index: torch.Tensor, zoom_box: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Training path: encode ``image`` (B, 2, 128, 128) once and render one slice per case,
        (B, 1, 128, 128); arguments as :meth:`render_slices`."""
        return self.render_slices(self.encode(image), axis, index, zoom_box)

    def reconstruct(self, image: torch.Tensor, axes: list[int] | None = None) -> torch.Tensor:
        """Whole volumes, rendered slice by slice along each of ``axes`` (codes, default [0] = axial)
        -> (B, len(axes), n, n, n)."""
        if axes is None:
            axes = [0]
        maps, glob = self.encode(image)
        b, n = image.shape[0], self.volume_shape
        vols: list[torch.Tensor] = []
        for axis in axes:
            chunks: list[torch.Tensor] = []
            for start in range(0, n, self.slice_batch):
                stop = min(start + self.slice_batch, n)
                index = torch.arange(start, stop, device=image.device, dtype=torch.float32)[None].expand(b, stop - start)
                ax = torch.full((b, stop - start), axis, device=image.device, dtype=torch.long)
                chunks.append(self.render(maps, glob, ax, index, None))
            s = torch.cat(chunks, dim=1)  # (B, n slices, rows, cols)
            if axis == 0:  # axial: fixes k; rows i, cols j
                vol = s.permute(0, 2, 3, 1)
            elif axis == 1:  # coronal: fixes j; rows i, cols k
                vol = s.permute(0, 2, 1, 3)
            else:  # sagittal: fixes i; rows j, cols k
                vol = s
            vols.append(vol)
        return torch.stack(vols, dim=1)

    def forward(
        self, image: torch.Tensor, slice_axis: torch.Tensor | None = None, slice_index: torch.Tensor | None = None,
        zoom_box: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward(image)``: the whole volume (B, 1, 128, 128, 128), axial slicing.

        ``forward(image, slice_axis, slice_index[, zoom_box])`` with (B, S) tensors: training slices
        (B, S, 128, 128); the encoder runs once per case.
        """
        if slice_axis is None or slice_index is None:
            return self.reconstruct(image, [0])
        maps, glob = self.encode(image)
        return self.render(maps, glob, slice_axis, slice_index, zoom_box)
