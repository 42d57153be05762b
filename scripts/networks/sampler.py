"""The perspective-sampling layer: image features of each X-ray at the pixel where a 3D point projects.

:class:`PerspectiveSampler` owns no weights. It is built from the same
:class:`~scripts.projection.geometry.ProjectionGeometry` that made the DRRs, so it reads each view exactly where
that X-ray imaged a point (cone-beam, source at SAD, detector at SID), not under the parallel-beam
or mis-scaled camera of the original code.

Two options reproduce the official code's sampling as data (model presets ``paper_official``,
``paper_global_official`` with the geometry preset ``perx2ct_official``): ``align_corners=True`` (the
normalised coordinates +-1 fall on the centres of the feature map's outer pixels instead of its outer
edges) and ``visibility_mask=False`` (no zeroing of points beyond the detector plane; the official
pinhole camera is virtual and masks nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scripts.projection.geometry import ProjectionGeometry

__all__ = ["PerspectiveSampler"]


class PerspectiveSampler(nn.Module):
    """Bilinear sampling of per-view feature maps at the cone-beam projections of 3D points.

    Args:
        geometry: the projection geometry of the X-rays. Its isocentre is ignored: points are given
            relative to it (the sampler uses ``geometry.centred()``).
        views: the views, in the order of the feature maps handed to :meth:`forward`.
        align_corners: ``grid_sample``'s convention: False (default) puts the normalised coordinates +-1 on
            the detector's outer edges, as :meth:`~scripts.projection.geometry.ProjectionGeometry.project_normalized`;
            True on the centres of the outer pixels of each feature map (the official code's sampling).
        visibility_mask: zero the features of points behind the source or beyond the detector plane
            (default True; False as the official code, whose camera masks nothing).

    Forward:
        features: list of per-view maps, each (B, C, h, w), covering the whole detector (any h, w:
            sampling uses normalised detector coordinates).
        points_mm: (B, N, 3) query points in mm, LPS axes, relative to the isocentre (= the centre
            of the reconstructed cube).
        returns: (B, N, V * C) features, view-major (view 0's C channels first). Zero where a point
        projects off the detector or lies behind the source.
    """

    def __init__(
        self,
        geometry: ProjectionGeometry,
        views: Sequence[str] = ("pa", "lateral"),
        align_corners: bool = False,
        visibility_mask: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(geometry, ProjectionGeometry):
            raise TypeError(
                f"geometry must be a scripts.projection.geometry.ProjectionGeometry, got {type(geometry).__name__}"
            )
        self.geometry = geometry.centred()
        self.views = tuple(views)
        if not self.views:
            raise ValueError("PerspectiveSampler needs at least one view")
        g = self.geometry
        frames = []
        for v in self.views:
            view = g.view(v)  # raises for unknown views
            frames.append(np.stack([g.source_mm(v), view.normal, view.col, view.row]))
        # (V, 4, 3): source position, normal (toward the source), column and row directions
        self.register_buffer("frames", torch.tensor(np.stack(frames), dtype=torch.float32), persistent=False)
        self.sid_mm = float(g.sid_mm)
        # half the detector (mm) along columns and rows: normalised coordinate +-1 at the outer edges
        self.half_width_mm = float(g.detector_size_mm[1]) / 2
        self.half_height_mm = float(g.detector_size_mm[0]) / 2
        self.num_views = len(self.views)
        self.align_corners = bool(align_corners)
        self.visibility_mask = bool(visibility_mask)

    def options(self) -> dict[str, bool]:
        """The sampling options (keyword arguments of the constructor besides geometry and views)."""
        return {"align_corners": self.align_corners, "visibility_mask": self.visibility_mask}

    def with_options(self, **options: bool) -> PerspectiveSampler:
        """A sampler of the same geometry and views with some options replaced (e.g. ``align_corners=True``)."""
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown sampler options {unknown}; known: {sorted(self.options())}")
        return PerspectiveSampler(self.geometry, self.views, **{**self.options(), **options})

    def project_normalized(self, points_mm: torch.Tensor, view_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) mm -> ((B, N, 2) grid_sample coordinates (x = column, y = row), (B, N) in-front mask)."""
        frame = self.frames[view_index].to(points_mm.dtype)
        rel = points_mm - frame[0]
        depth = -(rel @ frame[1])
        scale = self.sid_mm / depth.clamp(min=1e-6)
        x = (rel @ frame[2]) * scale / self.half_width_mm
        y = (rel @ frame[3]) * scale / self.half_height_mm
        return torch.stack((x, y), dim=-1), (depth > 0) & (depth < self.sid_mm)

    def forward(self, features: list[torch.Tensor], points_mm: torch.Tensor) -> torch.Tensor:
        if len(features) != self.num_views:
            raise ValueError(f"expected {self.num_views} feature maps ({self.views}), got {len(features)}")
        out: list[torch.Tensor] = []
        for v, feat in enumerate(features):
            # project in at least fp32 (bf16 would round positions to ~1 mm), sample in the maps' dtype
            pts = points_mm if points_mm.dtype == torch.float64 else points_mm.to(torch.float32)
            grid, valid = self.project_normalized(pts, v)
            grid = grid.to(feat.dtype)
            sampled = F.grid_sample(
                feat, grid[:, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=self.align_corners
            )
            sampled = sampled[..., 0].transpose(1, 2)  # (B, N, C)
            if self.visibility_mask:
                sampled = sampled * valid[..., None].to(sampled.dtype)
            out.append(sampled)
        return torch.cat(out, dim=-1)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"views={self.views}, sad_mm={g.sad_mm:g}, sid_mm={g.sid_mm:g}, "
            f"detector_size_mm={g.detector_size_mm}, align_corners={self.align_corners}, "
            f"visibility_mask={self.visibility_mask}"
        )
