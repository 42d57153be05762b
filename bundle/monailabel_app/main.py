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

Datastore:

* a folder: ``STUDIES`` holds one file per study (:mod:`lib.study`): ``<study_id>.nii.gz`` (2-frame NIfTI made by
  ``make_study``, whose header names the view of each frame) or ``<study_id>.zip`` (DICOM DX/CR radiographs, paired
  by view); only ``.nii.gz``, ``.nii`` and ``.zip`` files are listed. The result is a NIfTI volume.
* a DICOMweb root (``--studies http://HOST:PORT/dicom-web``, no environment variable needed): the items are
  *studies* holding a PA/AP and a lateral DX/CR image, in one series or two (:class:`lib.dicomweb.StudyDatastore`);
  ``image=`` takes a StudyInstanceUID or a SeriesInstanceUID of the study. The reconstruction is stored into the
  same study as a DICOM CT series (STOW-RS, :mod:`scripts.inference.dicom_ct_series`) and the answer is JSON with
  ``series_instance_uid`` and the self-check scores (``selfcheck``).

The server starts offline: MONAI Label 0.8.5 downloads dcmqi (a DICOM SEG converter) from GitHub whenever the
studies are a DICOMweb root (``monailabel/interfaces/app.py``, ``_init_dicomweb_datastore`` line 176 calls
``_download_dcmqi_tools``, lines 556-580); a reconstruction writes no SEG, so this app builds its own datastore
and never calls it (:meth:`PerX2CTApp._download_dcmqi_tools` is a no-op in case another path does).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from lib import compat

compat.install()  # harmless when already installed by the launcher; see lib/compat.py

import requests  # noqa: E402
from fastapi import HTTPException  # noqa: E402
from lib.dicom_study import StudyError  # noqa: E402
from lib.dicomweb import StoreError, StudyDatastore  # noqa: E402
from lib.infer import PerX2CTInfer  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.dicom import DICOMwebClientX  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from viewer import install as install_viewer  # noqa: E402

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
            self.studies = self.studies.rstrip("/").strip()
            return self._init_study_datastore()
        return LocalDatastore(
            self.studies,
            extensions=STUDY_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _init_study_datastore(self) -> StudyDatastore:
        """The DICOMweb client as MONAI Label builds it (``interfaces/app.py`` ``_init_dicomweb_datastore``, lines
        155-189: credentials and QIDO/WADO/STOW prefixes from its settings) in a study datastore; no dcmqi."""
        session = None
        user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
        password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
        if user and password:
            from dicomweb_client.session_utils import create_session_from_user_pass

            session = create_session_from_user_pass(user, password)
        client = DICOMwebClientX(
            url=self.studies,
            session=session,
            qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
            wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
            stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
        )
        cache = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
        return StudyDatastore(client, cache_path=cache or None)

    def _download_dcmqi_tools(self) -> None:
        """No dcmqi: MONAI Label (``interfaces/app.py`` lines 556-580) downloads it from GitHub to write DICOM SEG,
        which a reconstruction never writes; skipping it lets the server start offline."""
        logger.info("PerX2CT: dcmqi (DICOM SEG) not needed, not downloaded")

    def infer(self, request, datastore=None):
        """MONAI Label's ``infer``; a study the datastore cannot resolve is a 4xx with the reason, not a 500, and an
        unreachable or failing DICOMweb server a 502 naming it."""
        try:
            return super().infer(request, datastore)
        except StudyError as e:
            logger.warning("PerX2CT refused %s: %s", request.get("image"), e)
            raise HTTPException(status_code=e.status_code, detail=str(e)) from None
        except (requests.RequestException, StoreError) as e:
            logger.error("PerX2CT: DICOMweb server %s failed: %s", self.studies, e)
            raise HTTPException(status_code=502, detail=f"DICOMweb server {self.studies} failed: {e}") from None

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, Any] = {}
        if "perx2ct" in self.models:
            infers["perx2ct"] = PerX2CTInfer(
                bundle_root=self.bundle_path,
                ckpt_path=self.conf.get("ckpt_path") or None,
                model_preset=self.conf.get("model_preset") or None,
                preload=self.conf.get("preload", "false").lower() in ("1", "true", "yes"),
                dicomweb=self._datastore if isinstance(self._datastore, StudyDatastore) else None,
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

    def on_init_complete(self) -> None:
        super().on_init_complete()
        if self._server_mode:  # the study page /perx2ct/ (viewer/): Reconstruct CT, then open the series in OHIF
            install_viewer()
