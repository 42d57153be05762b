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

Per-view and per-call geometry (issue 19): each view reads its own source distance, detector distance, detector
size and offset from the geometry (:meth:`~scripts.projection.geometry.ProjectionGeometry.view_acquisition`), and
:meth:`PerspectiveSampler.forward` takes an optional ``camera`` (:meth:`PerspectiveSampler.camera` of a geometry:
tensors, so the network stays scriptable) that replaces the sampler's own geometry for that call: one
:class:`~scripts.projection.geometry.ProjectionGeometry` for the whole batch (e.g. the acquisition of a user's
radiographs read from their DICOM tags) or a sequence of one per case (views rendered with per-sample geometries).
The sampler's own geometry (the checkpoint's training geometry) stays the default, computed exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scripts.projection.geometry import ProjectionGeometry
from torch import nn

__all__ = ["PerspectiveSampler", "view_frames"]


def view_frames(geometry: ProjectionGeometry, views: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The sampling constants of ``views`` of ``geometry`` (its isocentre ignored: points are relative to it).

    Returns:
        ``frames`` (V, 4, 3): per view the source position (mm, isocentre at the origin), the normal (toward the
        source), the column and the row directions; ``consts`` (V, 5): per view the SID, half the detector width
        and height, and the detector offset along columns and rows, all mm.
    """
    g = geometry.centred()
    frames, consts = [], []
    for v in views:
        view, a = g.view(v), g.view_acquisition(v)  # raises for unknown views
        frames.append(np.stack([g.source_mm(v), view.normal, view.col, view.row]))
        consts.append([a.sid_mm, a.detector_size_mm[1] / 2, a.detector_size_mm[0] / 2, *a.detector_offset_mm])
    return np.stack(frames), np.asarray(consts, dtype=np.float64)


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
        camera: optional: another acquisition for this call, as :meth:`camera` makes it from a ``ProjectionGeometry``
            (one for the batch, or one per case); None (default) = the sampler's own geometry.
        returns: (B, N, V * C) features, view-major (view 0's C channels first). Zero where a point
        projects off the detector or lies behind the source.

    Size: one class because the projection, the visibility mask and the sampling share one convention (normalised
    detector coordinates, ``align_corners``) that must not drift apart; the per-call and per-case geometries are the
    same computation with other cameras.
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
        frames, consts = view_frames(self.geometry, self.views)
        # (V, 4, 3): source position, normal (toward the source), column and row directions
        self.register_buffer("frames", torch.tensor(frames, dtype=torch.float32), persistent=False)
        # per view: SID, half the detector (mm) along columns and rows (normalised coordinate +-1 at the outer
        # edges), detector offset along columns and rows (mm), as Python floats
        self.view_consts = [tuple(float(c) for c in row) for row in consts]
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

    @torch.jit.unused
    def camera(self, geometry: ProjectionGeometry | Sequence[ProjectionGeometry]) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampling constants of another acquisition, as tensors :meth:`forward` takes (``camera``).

        ``geometry``: one ``ProjectionGeometry`` with this sampler's views (the acquisition of every case of a batch,
        e.g. a user's radiographs read from their DICOM tags), or a sequence of one per case (views rendered with
        per-sample geometries). Returns ``frames`` (G, V, 4, 3) and ``consts`` (G, V, 5) float64 (see
        :func:`view_frames`), G = 1 or the number of cases. Python only (TorchScript keeps the tensors' path).
        """
        geometries = [geometry] if isinstance(geometry, ProjectionGeometry) else list(geometry)
        if not geometries or not all(isinstance(g, ProjectionGeometry) for g in geometries):
            raise ValueError(
                "geometry must be a ProjectionGeometry or a sequence of them (one per case), got "
                f"{type(geometry).__name__}"
            )
        parts = [view_frames(g, self.views) for g in geometries]
        frames = torch.as_tensor(np.stack([f for f, _ in parts]), dtype=torch.float64, device=self.frames.device)
        consts = torch.as_tensor(np.stack([c for _, c in parts]), dtype=torch.float64, device=self.frames.device)
        return frames, consts

    def project_normalized(
        self, points_mm: torch.Tensor, view_index: int, camera: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) mm -> ((B, N, 2) grid_sample coordinates (x = column, y = row), (B, N) in-front mask).

        ``camera``: as :meth:`forward` (None = the sampler's own geometry, computed as it always was)."""
        if camera is not None:
            return self._project_camera(points_mm, view_index, camera)
        frame = self.frames[view_index].to(points_mm.dtype)
        sid, half_w, half_h, off_c, off_r = self.view_consts[view_index]
        rel = points_mm - frame[0]
        depth = -(rel @ frame[1])
        scale = sid / depth.clamp(min=1e-6)
        u, w = (rel @ frame[2]) * scale, (rel @ frame[3]) * scale  # mm on the detector from the central ray
        if off_c != 0.0 or off_r != 0.0:
            u, w = u - off_c, w - off_r
        x = u / half_w
        y = w / half_h
        return torch.stack((x, y), dim=-1), (depth > 0) & (depth < sid)

    def _project_camera(
        self, points_mm: torch.Tensor, view_index: int, camera: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`project_normalized` with the constants of :meth:`camera` (G = 1 or one per case)."""
        frames, consts = camera
        if frames.shape[0] != 1 and frames.shape[0] != points_mm.shape[0]:
            raise ValueError(
                f"camera holds {frames.shape[0]} geometries for a batch of {points_mm.shape[0]}: give 1 or one per case"
            )
        frame = frames[:, view_index].to(device=points_mm.device, dtype=points_mm.dtype)  # (G, 4, 3)
        const = consts[:, view_index].to(device=points_mm.device, dtype=points_mm.dtype)[:, None, :]  # (G, 1, 5)
        rel = points_mm - frame[:, None, 0]
        depth = -(rel * frame[:, None, 1]).sum(-1)
        scale = const[..., 0] / depth.clamp(min=1e-6)
        x = ((rel * frame[:, None, 2]).sum(-1) * scale - const[..., 3]) / const[..., 1]
        y = ((rel * frame[:, None, 3]).sum(-1) * scale - const[..., 4]) / const[..., 2]
        return torch.stack((x, y), dim=-1), (depth > 0) & (depth < const[..., 0])

    def forward(
        self,
        features: list[torch.Tensor],
        points_mm: torch.Tensor,
        camera: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if len(features) != self.num_views:
            raise ValueError(f"expected {self.num_views} feature maps ({self.views}), got {len(features)}")
        out: list[torch.Tensor] = []
        for v, feat in enumerate(features):
            # project in at least fp32 (bf16 would round positions to ~1 mm), sample in the maps' dtype
            pts = points_mm if points_mm.dtype == torch.float64 else points_mm.to(torch.float32)
            grid, valid = self.project_normalized(pts, v, camera)
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
            + "".join(f", {k}={v.overrides}" for k, v in g.views.items() if v.overrides)
        )
