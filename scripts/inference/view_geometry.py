"""Hand each input's own acquisition geometry to the network during inference (issue 19).

:class:`PrepareBatchWithGeometry` is the ``prepare_batch`` of the inference evaluator: besides the image (and the
label when the batch has one) it returns the keyword ``geometry`` for the inferer, read from the batch's
``view_geometry`` (written by :class:`scripts.transforms.acquisition.ReadAcquisitiond`): None when every case keeps
the checkpoint's training geometry, one :class:`~scripts.projection.geometry.ProjectionGeometry` for a batch of
one, else one per case (the sampler takes either; :meth:`scripts.networks.sampler.PerspectiveSampler.forward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys
from scripts.projection.acquisition import geometry_from_json
from scripts.projection.geometry import ProjectionGeometry

__all__ = ["PrepareBatchWithGeometry", "batch_geometry"]


def batch_geometry(
    texts: str | Sequence[str] | None, base: ProjectionGeometry | None = None
) -> ProjectionGeometry | list[ProjectionGeometry] | None:
    """The ``geometry`` argument of the network for a collated ``view_geometry`` (a list of JSON texts, ``""`` for a
    case with the training geometry, which then gets ``base``); None when no case has its own."""
    if texts is None:
        return None
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not any(texts):
        return None
    geos = [geometry_from_json(t) or base for t in texts]
    if any(g is None for g in geos):
        raise ValueError("a batch mixes cases with and without their own geometry: give PrepareBatchWithGeometry base")
    return geos[0] if len(geos) == 1 else geos  # type: ignore[return-value]


class PrepareBatchWithGeometry(PrepareBatch):
    """``prepare_batch`` of the inference evaluator: ``(image, label or None, (), {"geometry": ...})``.

    Args:
        geometry_key: the batch key of the views' geometry (JSON texts).
        base: the network's geometry, for cases without their own in a batch where others have one.
    """

    def __init__(self, geometry_key: str = "view_geometry", base: ProjectionGeometry | None = None) -> None:
        self.geometry_key, self.base = geometry_key, base

    def __call__(
        self, batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ):
        image = batchdata[CommonKeys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs)
        label = batchdata.get(CommonKeys.LABEL)
        if isinstance(label, torch.Tensor):
            label = label.to(device=device, non_blocking=non_blocking, **kwargs)
        geometry = batch_geometry(batchdata.get(self.geometry_key), self.base)
        return image, label, (), ({} if geometry is None else {"geometry": geometry})
