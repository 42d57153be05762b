"""MONAI Label app serving PerX2CT reconstruction (CT from a PA and a lateral chest radiograph).

Start (from the repository root; see ``docs/monailabel.md``)::

    python -m bundle.monailabel_app start_server --app bundle/monailabel_app --studies STUDIES \
        --conf models perx2ct [--conf bundle_path .] [--conf ckpt_path models/model.pt] [--conf model_preset paper]

``--conf`` keys:

* ``models``: comma-separated infer tasks to serve; ``perx2ct`` (or ``all``). Required.
* ``bundle_path``: the bundle root (default: the repository this app lives in).
* ``ckpt_path``: the state dict to serve (default: the bundle config's ``ckpt_path``, ``models/model.pt``).
* ``model_preset``: the network preset the checkpoint was trained with (default: the config's, ``paper``).
* ``preload``: ``true`` to build the network at start-up instead of at the first request.

Datastore: ``STUDIES`` holds one file per study (:mod:`lib.study`): ``<study_id>.nii.gz`` (2-frame
NIfTI, frame 0 PA, frame 1 lateral) or ``<study_id>.zip`` (DICOM DX/CR radiographs, paired by view);
only ``.nii.gz``, ``.nii`` and ``.zip`` files are listed. A DICOMweb datastore (``--studies http://...``)
serves DICOM series as folders; a folder holding both views is accepted the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from lib import compat

compat.install()  # harmless when already installed by the launcher; see lib/compat.py

from lib.infer import PerX2CTInfer  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402

logger = logging.getLogger(__name__)

MODELS = ("perx2ct",)
STUDY_EXTENSIONS = ("*.nii.gz", "*.nii", "*.zip")
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2]  # bundle/monailabel_app/main.py -> repository root


class PerX2CTApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.bundle_path = str(Path(conf.get("bundle_path") or DEFAULT_BUNDLE).resolve())
        requested = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
        if not requested:
            raise ValueError(
                f"no model selected: start the server with --conf models {MODELS[0]} (available: {', '.join(MODELS)})"
            )
        if "all" in requested:
            requested = list(MODELS)
        unknown = sorted(set(requested) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown} in --conf models; available: {', '.join(MODELS)}")
        self.models = requested
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="PerX2CT",
            description=(
                "PerX2CT (ICASSP 2023): reconstructs a chest CT volume (HU) from a PA and a lateral chest "
                "radiograph. Send a study (2-frame NIfTI, or the two DICOM DX/CR radiographs as a .zip); the "
                "result is a new CT volume, not a label map. See models.perx2ct for inputs, output frame and call."
            ),
            version="1",
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return LocalDatastore(
            self.studies,
            extensions=STUDY_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, Any] = {}
        if "perx2ct" in self.models:
            infers["perx2ct"] = PerX2CTInfer(
                bundle_root=self.bundle_path,
                ckpt_path=self.conf.get("ckpt_path") or None,
                model_preset=self.conf.get("model_preset") or None,
                preload=self.conf.get("preload", "false").lower() in ("1", "true", "yes"),
            )
            logger.info(
                "PerX2CT: bundle %s, checkpoint %s, preset %s",
                self.bundle_path,
                infers["perx2ct"].get_path(),
                infers["perx2ct"].model_preset,
            )
        return infers

    def init_trainers(self) -> Dict[str, Any]:
        return {}  # training is the bundle's job: python -m monai.bundle run training --config_file configs/train.json

    def init_scoring_methods(self) -> Dict[str, Any]:
        return {}
