"""PerX2CT: CT slices from two X-rays by perspective sampling of image features.

For one output slice, a 32 x 32 grid of 3D query points is laid in the slice's plane (or in a zoom-in
sub-square of it). Each point gets ``[PA features (C), lateral features (C), positional encoding (63)
(, global features 2 x G)]`` (paper: 512 + 512 + 63 = 1087 channels, 1599 with 2 x 256 global), the
PA/lateral features sampled by :class:`PerspectiveSampler` where the point projects on each X-ray.
The 2D decoder turns that (F, 32, 32) grid into a 128 x 128 slice. No quantiser, no MLP between
sampling and decoder. Each view goes through the shared encoder in its own call (BatchNorm statistics
of one view's images in training, as the official code).

Conventions of the official code, as data (the ``*_official`` presets of :mod:`scripts.networks.presets`,
for the authors' published weights; see ``scripts/networks/import_official.py``):

* ``positional_encoding["axes"]``: the official world axes, ``p = (-z, y, x) / 320 mm``;
* ``slice_layout="official"``: the 32 x 32 grid is decoded in the official slice layout (axial: the
  transpose of this bundle's; coronal/sagittal: ``np.rot90(., 1)`` of it) and the 128 x 128 output laid
  back out (the decoder's 3 x 3 kernels are not transpose-symmetric, so the layout changes the result);
* ``view_transforms``: the encoder sees each view as the official dataloader shows it (PA ``fliplr``,
  lateral ``rot90`` counter-clockwise); its feature maps are turned back, so the sampler keeps this
  bundle's image convention;
* ``input_intensity="8bit"``: inputs are the 8-bit image / 255 with no re-normalisation by the image's
  maximum (read by the inference preprocessing).

API: :meth:`PerX2CT.encode` (one encoder call per view for all the cases of a batch),
:meth:`PerX2CT.render` / ``forward(image, slice_axis, slice_index, zoom_box)`` (several slices per case,
axis codes; the trainer's path), :meth:`PerX2CT.reconstruct` / ``forward(image)`` (whole volumes, encoded once).
Each takes an optional ``camera``: the acquisition of these X-rays (``net.sampler.camera(geometry)`` of one
:class:`~scripts.projection.geometry.ProjectionGeometry`, or of one per case), which the sampler uses instead of its
own (the checkpoint's training geometry) for that call (:meth:`PerspectiveSampler.forward`).

Frames and shapes:

* ``image``: (B, 2, 128, 128) float in [0, 1]: channel 0 PA, channel 1 lateral, as the DRRs
  (rows head to feet; see :mod:`scripts.projection.geometry` for the left-right convention).
* volume: (B, 1, 128, 128, 128), array axes (x, y, z) = LPS, voxel (i, j, k) centred at
  ``((i, j, k) - 63.5) * 2.5`` mm from the isocentre; values in the target scale
  ((HU + 1024) / 2500): the decoder ends in a linear conv (no sigmoid, no clamp), so values may stray
  slightly outside [0, 1]; clamp downstream if needed.
* slices: see :mod:`scripts.slicing` (axis codes 0 axial, 1 coronal, 2 sagittal; zoom boxes
  ``(row0, col0, size)`` in voxels of the 128 grid).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scripts.frame import FRAME
from scripts.networks.decoder import Decoder
from scripts.networks.encoder import ResNetEncoder, random_encoder_warning
from scripts.networks.sampler import PerspectiveSampler
from scripts.slicing import full_boxes, slice_positions_flat, voxel_to_mm
from torch import nn

__all__ = ["PerX2CT", "PositionalEncoding", "VIEW_TRANSFORMS", "INPUT_INTENSITIES", "SLICE_LAYOUTS"]


#: Transforms of an input view before the encoder, as (flip left-right first, then ``np.rot90`` k times).
VIEW_TRANSFORMS: dict[str, tuple[bool, int]] = {
    "identity": (False, 0),
    "fliplr": (True, 0),
    "flipud": (True, 2),
    "rot90": (False, 1),
    "rot180": (False, 2),
    "rot270": (False, 3),
}
#: Values of :attr:`PerX2CT.input_intensity` (how inference should scale a radiograph; see the class doc).
INPUT_INTENSITIES = ("max_normalized", "8bit")
SLICE_LAYOUTS = ("bundle", "official")


class PositionalEncoding(nn.Module):
    """NeRF positional encoding as the official code's embedder (include_input, bands ``2^0 .. 2^(F-1)``).

    Input: ``offset`` (..., 3), positions relative to the cube centre in *cube sides* along the volume's
    array axes (``(voxel - 63.5) / 128``: [-0.5, 0.5] over the cube, i.e. mm / 320). Then
    ``p = axes @ offset / unit`` and the output (..., 3 + 6F) is
    ``[p, sin(b0 p), cos(b0 p), sin(b1 p), cos(b1 p), ...]`` (3 values per term), ``b_k = 2^k`` (times pi
    when ``pi``): 63 values for 10 frequencies.

    Args:
        frequencies: number of bands (10).
        unit: cube sides per encoding unit (1.0: the official [-0.5, 0.5]; 0.5 with ``pi=True`` was this
            bundle's earlier encoding on [-1, 1]).
        pi: multiply the bands by pi (the official embedder does not).
        axes: 3 x 3 matrix (rows) from the array axes to the encoding's axes; None = identity. The official
            world axes are ``((0, 0, -1), (0, 1, 0), (1, 0, 0))``: ``p = (-z, y, x) / 320 mm``.
    """

    def __init__(
        self, frequencies: int = 10, unit: float = 1.0, pi: bool = False, axes: list[list[float]] | None = None
    ) -> None:
        super().__init__()
        bands = 2.0 ** torch.arange(int(frequencies), dtype=torch.float32)
        self.register_buffer("bands", bands * math.pi if pi else bands, persistent=False)
        rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        m = rows if axes is None else [[float(v) for v in row] for row in axes]
        if len(m) != 3 or any(len(row) != 3 for row in m):
            raise ValueError(f"positional encoding axes must be a 3 x 3 matrix (rows), got {axes!r}")
        self.register_buffer("axes", torch.tensor(m, dtype=torch.float32), persistent=False)
        self.identity_axes = m == rows
        if not float(unit) > 0:
            raise ValueError(f"positional encoding unit must be > 0, got {unit}")
        self.unit = float(unit)
        self.out_channels = 3 + 6 * int(frequencies)

    def forward(self, offset: torch.Tensor) -> torch.Tensor:
        p = offset if self.identity_axes else offset @ self.axes.to(offset.dtype).t()
        if self.unit != 1.0:
            p = p / self.unit
        xb = p[..., None, :] * self.bands.to(p.dtype)[:, None]  # (..., F, 3)
        sc = torch.stack((torch.sin(xb), torch.cos(xb)), dim=-2)  # (..., F, 2, 3)
        return torch.cat((p, sc.flatten(-3)), dim=-1)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, unit={self.unit:g}, identity_axes={self.identity_axes}"


class PerX2CT(nn.Module):
    """The PerX2CT network (see the module docstring).

    Size: the network's path (encode, render, reconstruct) and the official-layout options, which change that
    path; its parts are their own modules (sampler, encoder, decoder, positional encoding).

    Args:
        sampler: the perspective-sampling layer (built from the DRRs' geometry), handed in by the config.
        encoder: the shared 2D encoder (:class:`ResNetEncoder`).
        decoder_channels, channel_mult, num_res_blocks, attn_resolutions: the decoder (paper: 128,
            (1, 2, 4), 2, (32,)).
        positional_encoding: keyword arguments of :class:`PositionalEncoding` (default: the official
            encoding, 10 frequencies -> 63 values, no pi, on mm / 320).
        query_grid: query points per slice side (32).
        volume_shape: voxels per side of the output cube (128).
        volume_size_mm: side of the output cube in mm (320).
        zoom_in: train with zoomed sub-squares (the paper's global variant).
        slice_batch: slices rendered per decoder call when reconstructing a volume (memory vs speed).
        slice_layout: ``"bundle"`` (default) or ``"official"``: the layout the query grid is decoded in
            (see the module doc); outputs are always in this bundle's layout.
        view_transforms: per view name, a key of :data:`VIEW_TRANSFORMS` applied to that view before the
            encoder (default none; official ``{"pa": "fliplr", "lateral": "rot90"}``); the feature maps are
            transformed back before sampling.
        input_intensity: how inputs are expected to be scaled, a documented attribute read by the inference
            preprocessing (the network itself takes (B, 2, H, W) in [0, 1] either way):
            ``"max_normalized"`` (default): each radiograph divided by its own maximum, then 8-bit, as this
            bundle's DRRs; ``"8bit"``: the 8-bit image / 255 as given, no re-normalisation (the official
            dataloader; its DRRs reach about 0.98 at most after resizing).
    """

    def __init__(
        self,
        sampler: PerspectiveSampler,
        encoder: ResNetEncoder,
        decoder_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (32,),
        positional_encoding: dict[str, Any] | None = None,
        query_grid: int = 32,
        volume_shape: int = FRAME.shape,
        volume_size_mm: float = FRAME.size_mm,
        zoom_in: bool = False,
        slice_batch: int = 16,
        slice_layout: str = "bundle",
        view_transforms: dict[str, str] | None = None,
        input_intensity: str = "max_normalized",
    ) -> None:
        super().__init__()
        if not isinstance(sampler, PerspectiveSampler):
            raise TypeError(f"sampler must be a PerspectiveSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.encoder = encoder
        self.pe = PositionalEncoding(**dict(positional_encoding or {}))
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
        if slice_layout not in SLICE_LAYOUTS:
            raise ValueError(f"unknown slice_layout {slice_layout!r}; choose one of {SLICE_LAYOUTS}")
        self.official_layout = slice_layout == "official"
        self.slice_layout = str(slice_layout)
        transforms = dict(view_transforms or {})
        unknown_views = sorted(set(transforms) - set(sampler.views))
        if unknown_views:
            raise ValueError(
                f"view_transforms names views {unknown_views} that the sampler lacks {list(sampler.views)}"
            )
        for name in transforms.values():
            if name not in VIEW_TRANSFORMS:
                raise ValueError(f"unknown view transform {name!r}; choose one of {sorted(VIEW_TRANSFORMS)}")
        self.view_transforms = {v: transforms.get(v, "identity") for v in sampler.views}
        self.view_flip = [VIEW_TRANSFORMS[self.view_transforms[v]][0] for v in sampler.views]
        self.view_rot = [VIEW_TRANSFORMS[self.view_transforms[v]][1] for v in sampler.views]
        if input_intensity not in INPUT_INTENSITIES:
            raise ValueError(f"unknown input_intensity {input_intensity!r}; choose one of {INPUT_INTENSITIES}")
        self.input_intensity = str(input_intensity)
        self.warned_random_encoder = False

    def train(self, mode: bool = True) -> PerX2CT:
        """Training mode; the first time, warn if the encoder starts from random weights (not the paper's recipe:
        :func:`~scripts.networks.encoder.random_encoder_warning`)."""
        super().train(mode)
        if mode and not self.warned_random_encoder:
            self.warned_random_encoder = True
            random_encoder_warning(self)
        return self

    # ------------------------------------------------------------------ stages
    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, V, H, W) -> (per-view local maps [(B, C, H/8, W/8)] * V, global (B, V * G) or (B, 0)).

        Each view goes through the shared encoder in its own call (BatchNorm statistics from one view's
        images in training, as the official code), after its ``view_transforms`` entry; the feature map is
        transformed back, so maps are in this bundle's image convention.
        """
        if image.ndim != 4 or image.shape[1] != self.num_views:
            raise ValueError(f"image must be (B, {self.num_views}, H, W), got {list(image.shape)}")
        maps: list[torch.Tensor] = []
        globs: list[torch.Tensor] = []
        for v in range(self.num_views):
            flip, k = self.view_flip[v], self.view_rot[v]
            x = image[:, v : v + 1]
            if flip:
                x = x.flip(-1)
            if k != 0:
                x = torch.rot90(x, k, [2, 3])
            local, glob = self.encoder(x)
            if k != 0:
                local = torch.rot90(local, -k, [2, 3])
            if flip:
                local = local.flip(-1)
            maps.append(local)
            globs.append(glob)
        return maps, torch.cat(globs, dim=1)

    def render(
        self,
        maps: list[torch.Tensor],
        glob: torch.Tensor,
        slice_axis: torch.Tensor,
        slice_index: torch.Tensor,
        zoom_box: torch.Tensor | None = None,
        camera: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Slices of encoded cases: axis/index (B, S), zoom_box (B, S, 3) or None -> (B, S, 128, 128).
        ``camera``: the X-rays' acquisition for the sampler (None: its own; see the module docstring)."""
        b, s = slice_index.shape[0], slice_index.shape[1]
        g = self.query_grid
        n = b * s
        box = full_boxes(n, self.volume_shape, slice_index.device) if zoom_box is None else zoom_box.reshape(n, 3)
        axis = slice_axis.reshape(n)
        vox = slice_positions_flat(axis, slice_index.reshape(n), box, g, self.volume_shape)  # (n, g, g, 3)
        if self.official_layout:
            vox = self._to_official_layout(vox.permute(0, 3, 1, 2), axis).permute(0, 2, 3, 1)
        mm = voxel_to_mm(vox, self.volume_shape, self.volume_size_mm)  # relative to the isocentre
        offset = (vox - (self.volume_shape - 1) / 2) / self.volume_shape  # cube sides, [-0.5, 0.5]
        feats = [self.sampler(maps, mm.reshape(b, s * g * g, 3), camera), self.pe(offset.reshape(b, s * g * g, 3))]
        if self.global_features:
            feats.append(glob[:, None, :].expand(b, s * g * g, glob.shape[1]))
        x = torch.cat(feats, dim=-1).to(maps[0].dtype)  # (B, S*g*g, F)
        x = x.reshape(n, g, g, self.point_channels).permute(0, 3, 1, 2)
        out = self.decoder(x)  # (n, 1, 128, 128)
        if self.official_layout:
            out = self._from_official_layout(out, axis)
        return out.reshape(b, s, out.shape[-2], out.shape[-1])

    @staticmethod
    def _to_official_layout(x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) in this bundle's slice layout -> the official one: axial ``official[a, b] =
        bundle[b, a]``; coronal/sagittal ``official = np.rot90(bundle, 1)``."""
        axial = (axis == 0).reshape(-1, 1, 1, 1)
        return torch.where(axial, x.transpose(-2, -1), torch.rot90(x, 1, [-2, -1]))

    @staticmethod
    def _from_official_layout(x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_to_official_layout`."""
        axial = (axis == 0).reshape(-1, 1, 1, 1)
        return torch.where(axial, x.transpose(-2, -1), torch.rot90(x, -1, [-2, -1]))

    def reconstruct(
        self,
        image: torch.Tensor,
        axes: list[int] | None = None,
        camera: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Whole volumes, rendered slice by slice along each of ``axes`` (codes, default [0] = axial)
        -> (B, len(axes), n, n, n). ``camera``: the X-rays' acquisition (None: the sampler's own)."""
        if axes is None:
            axes = [0]
        maps, glob = self.encode(image)
        b, n = image.shape[0], self.volume_shape
        vols: list[torch.Tensor] = []
        for axis in axes:
            chunks: list[torch.Tensor] = []
            for start in range(0, n, self.slice_batch):
                stop = min(start + self.slice_batch, n)
                index = torch.arange(start, stop, device=image.device, dtype=torch.float32)[None].expand(
                    b, stop - start
                )
                ax = torch.full((b, stop - start), axis, device=image.device, dtype=torch.long)
                chunks.append(self.render(maps, glob, ax, index, None, camera))
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
        self,
        image: torch.Tensor,
        slice_axis: torch.Tensor | None = None,
        slice_index: torch.Tensor | None = None,
        zoom_box: torch.Tensor | None = None,
        camera: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``forward(image)``: the whole volume (B, 1, 128, 128, 128), axial slicing.
        ``camera`` (keyword): the X-rays' acquisition for the sampler (None: its own).

        ``forward(image, slice_axis, slice_index[, zoom_box])`` with (B, S) tensors: training slices
        (B, S, 128, 128); each view is encoded once per call.
        """
        if slice_axis is None or slice_index is None:
            return self.reconstruct(image, [0], camera)
        maps, glob = self.encode(image)
        return self.render(maps, glob, slice_axis, slice_index, zoom_box, camera)
