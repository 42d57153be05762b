"""The views' own acquisition geometry as a dictionary transform (issue 19): :class:`ReadAcquisitiond`.

For each view of an item, :func:`scripts.projection.acquisition.read_acquisition` finds the acquisition (explicit
options, DICOM attributes, clinical defaults); the transform stores

* ``acquisition``: JSON text, view -> :meth:`~scripts.projection.acquisition.Acquisition.to_dict` (values, where
  each was read, which were assumed, the display transform), read by
  :class:`scripts.transforms.radiograph.LoadRadiographsd` (``acquisition_key``) and the self-check;
* ``view_geometry``: JSON text of the network's geometry with each view's own acquisition
  (:meth:`~scripts.projection.geometry.ProjectionGeometry.to_dict`), or ``""`` when every view keeps the
  checkpoint's training geometry. Text, so MONAI's collation keeps it as a list of strings per batch;
  :class:`scripts.inference.view_geometry.PrepareBatchWithGeometry` hands it to the network.

It logs one line per view that does not keep the training geometry, naming the assumed values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts.projection.acquisition import Acquisition, apply_acquisitions, parse_geometry_option, read_acquisition
from scripts.projection.geometry import ProjectionGeometry
from scripts.transforms.radiograph import read_radiograph_array

__all__ = ["ReadAcquisitiond"]

logger = logging.getLogger(__name__)


class ReadAcquisitiond(MapTransform):
    """Each view's acquisition geometry -> ``acquisition`` and ``view_geometry`` (JSON text; module docstring).

    Args:
        keys: the view keys (file paths; arrays have no attributes and keep the training geometry).
        geometry: the network's geometry (:class:`ProjectionGeometry`): display directions and the default.
        options: view -> explicit geometry (mapping or its text, :func:`parse_geometry_option`), e.g.
            ``{"pa": "@pa_geometry", "lateral": "@lateral_geometry"}``; an item's own ``<view>_geometry`` wins.
        acquisition_key, geometry_key: where the results go.
    """

    def __init__(
        self,
        keys: KeysCollection = ("pa", "lateral"),
        geometry: ProjectionGeometry | None = None,
        options: Mapping[str, Any] | None = None,
        acquisition_key: str = "acquisition",
        geometry_key: str = "view_geometry",
    ) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.geometry = geometry if geometry is not None else ProjectionGeometry.from_preset("perx2ct")
        # checked now: a bad --pa_geometry fails before any case is read
        self.options = {str(k): parse_geometry_option(v, f"--{k}_geometry") for k, v in dict(options or {}).items()}
        self.acquisition_key, self.geometry_key = acquisition_key, geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        acqs: list[Acquisition] = []
        for key in self.key_iterator(d):
            view, src = str(key), d[key]
            own = d.get(f"{view}_geometry")
            opts = parse_geometry_option(own, f"--{view}_geometry") if own else self.options.get(view)
            path = Path(str(src)) if isinstance(src, (str, Path)) else None
            shape = None
            if opts and path is not None and not opts.get("detector_size_mm"):
                shape = read_radiograph_array(path, view)[0].shape  # a non-DICOM image's size in pixels
            acq = read_acquisition(path, view, self.geometry, opts, shape)
            if acq.source != "training":
                logger.info("%s", acq.summary())
            acqs.append(acq)
        d[self.acquisition_key] = json.dumps({a.view: a.to_dict() for a in acqs})
        own = any(a.source != "training" for a in acqs)
        d[self.geometry_key] = json.dumps(apply_acquisitions(self.geometry, acqs).to_dict()) if own else ""
        return d
