"""The app's DICOMweb datastore: items are *studies* holding a PA/AP and a lateral DX/CR radiograph.

MONAI Label 0.8.5's own ``DICOMWebDatastore`` (``monailabel/datastore/dicom.py``) does not fit a model whose
input is two radiographs:

* its items are *series* (``list_images``, dicom.py:128-133: ``search_for_series`` -> SeriesInstanceUIDs), so a PA
  and a lateral in two series (the usual export) cannot be addressed as one input, and a StudyInstanceUID is not an
  item (``get_image_uri`` downloads *a series* by that id, dicom.py:77-93);
* its filter is ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, ``{"Modality": "CT"}`` by default
  (``monailabel/config.py:69``: a DX study lists 0 items);
* with ``CONVERT_TO_NIFTI`` (default true) it stacks a series' images into one NIfTI (dicom.py:88-91), losing which
  image is which view;
* its lists are cached for ``MONAI_LABEL_DICOMWEB_CACHE_EXPIRY`` = 7200 s (``config.py:70``; dicom.py:128, 135):
  new studies stay hidden for two hours;
* its only write-back is ``save_label`` -> DICOM SEG (dicom.py:173-213), meaningless for a CT volume.

:class:`StudyDatastore` keeps MONAI Label's DICOMweb client (the app builds it as MONAI Label does) and replaces the
item logic:

* ``list_images``: the StudyInstanceUIDs of studies with a DX or CR series (two QIDO-RS series searches,
  ``Modality=DX`` and ``Modality=CR``); cached :data:`LIST_TTL_S` seconds and dropped after every store;
* ``get_image_uri(id)``: ``id`` is a StudyInstanceUID, or a SeriesInstanceUID expanded to its study. The study's
  DX/CR instances (any series) are fetched by WADO-RS into a fresh folder ``<cache>/requests/<random>/<study UID>/``
  that the infer task pairs by view (:func:`lib.study.resolve_study` -> :mod:`lib.dicom_study`: ``ViewPosition``,
  then ``ViewCodeSequence``; never by order) and removes afterwards (:meth:`release`). Other modalities in the study
  (e.g. a CT series stored back by this app) are ignored; a study without DX/CR, with more than two DX/CR images, or
  an unknown id raises :class:`lib.dicom_study.StudyError` (4xx with the reason);
* :meth:`store`: STOW-RS of a derived series (:mod:`scripts.inference.dicom_ct_series`) into the study.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lib.dicom_study import StudyError
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.utils.others.generic import md5_digest
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

__all__ = ["StudyDatastore", "StoreError", "LIST_TTL_S", "MODALITIES", "MAX_RADIOGRAPHS"]

#: seconds a study list is reused (MONAI Label's own: 7200 s); a store drops it at once
LIST_TTL_S = 10.0
#: the modalities of the radiographs a study is made of
MODALITIES = ("DX", "CR")
#: a study holds one PA/AP and one lateral radiograph
MAX_RADIOGRAPHS = 2
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # DICOM PS3.5 9.1: digits and dots, 64 characters at most


class StoreError(RuntimeError):
    """The DICOMweb server refused instances of a STOW-RS request (the app answers 502)."""


def _value(ds: Dict[str, Any], tag: str, default: str = "") -> str:
    """One value of a QIDO-RS JSON attribute (``{"0020000D": {"vr": "UI", "Value": [...]}}``)."""
    values = (ds.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else default


class StudyDatastore(DICOMWebDatastore):
    """DICOMweb datastore whose items are studies (module doc).

    Size: MONAI Label's datastore interface is one object (lists, item URIs, info, labels, status); the overrides
    that make its items studies (lists, resolving an id, fetching a study, storing a series) share its DICOMweb
    client and cache folder, so they stay in this one subclass.

    Args:
        client: MONAI Label's DICOMweb client (``DICOMwebClientX``), already pointing at the DICOMweb root.
        cache_path: folder for the per-request downloads (default: MONAI Label's ``~/.cache/monailabel/dicom``);
            a subfolder named by the server URL's hash is used, as MONAI Label does.
        list_ttl_s: how long a study list is reused.
    """

    def __init__(self, client, cache_path: Optional[str] = None, list_ttl_s: float = LIST_TTL_S) -> None:
        # not DICOMWebDatastore.__init__: it starts LocalDatastore with auto_reload=True (a file watcher on the
        # cache, useless for per-request downloads); the attributes it sets are set here
        self._client = client
        self._search_filter = {"Modality": list(MODALITIES)}
        self._fetch_by_frame = False
        self._convert_to_nifti = False
        root = cache_path or os.path.join(Path.home(), ".cache", "monailabel", "dicom")
        datastore_path = os.path.join(root, md5_digest(client.base_url))
        self._requests = Path(datastore_path) / "requests"
        self._requests.mkdir(parents=True, exist_ok=True)
        self._list_ttl_s = float(list_ttl_s)
        self._list: tuple[float, List[str]] | None = None
        self._lock = threading.Lock()
        logger.info("PerX2CT DICOMweb study datastore: %s (downloads in %s)", client.base_url, self._requests)
        LocalDatastore.__init__(self, datastore_path=datastore_path, auto_reload=False)

    def name(self) -> str:
        return f"PerX2CT studies (DX/CR) at {self._client.base_url}"

    # ---------------------------------------------------------------------------------------------- lists
    def list_images(self) -> List[str]:
        """StudyInstanceUIDs of the studies with a DX or CR series (cached :data:`LIST_TTL_S` s)."""
        with self._lock:
            if self._list is not None and time.monotonic() - self._list[0] < self._list_ttl_s:
                return list(self._list[1])
        studies: dict[str, None] = {}
        for modality in MODALITIES:
            for ds in self._client.search_for_series(search_filters={"Modality": modality}, get_remaining=True):
                uid = _value(ds, "0020000D")
                if uid:
                    studies[uid] = None
        listed = sorted(studies)
        with self._lock:
            self._list = (time.monotonic(), listed)
        return list(listed)

    def invalidate(self) -> None:
        """Drop the cached study list (after a store, the next list asks the server again)."""
        with self._lock:
            self._list = None

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        return []  # a reconstruction has no labels

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        return self.list_images()

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        return []  # no training from the PACS: training is the bundle's job

    def status(self) -> Dict[str, Any]:
        return {"total": len(self.list_images()), "completed": 0, "label_tags": {}}

    def json(self):
        return {"name": self.name(), "objects": {uid: {"image": {"info": {}}} for uid in self.list_images()}}

    def save_label(self, image_id, label_filename, label_tag, label_info, label_id=""):
        raise StudyError(
            "labels are not stored by the PerX2CT app: a reconstruction is stored into its study as a CT series by "
            "POST /infer/perx2ct?image=<StudyInstanceUID>",
            status_code=405,
        )

    # --------------------------------------------------------------------------------------------- items
    def study_uid(self, image_id: str) -> str:
        """The StudyInstanceUID of ``image_id`` (a StudyInstanceUID or a SeriesInstanceUID); 404 if unknown."""
        uid = str(image_id).strip()
        if not _UID.match(uid) or len(uid) > 64:
            raise StudyError(f"{image_id!r} is not a DICOM UID; pass a StudyInstanceUID or a SeriesInstanceUID")
        if self._client.search_for_series(search_filters={"StudyInstanceUID": uid}, limit=1):
            return uid
        series = self._client.search_for_series(search_filters={"SeriesInstanceUID": uid}, limit=1)
        study = _value(series[0], "0020000D") if series else ""
        if not study:
            raise StudyError(f"no study or series {uid} at {self._client.base_url}", status_code=404)
        return study

    def _radiograph_instances(self, study: str) -> list[tuple[str, str]]:
        """``[(series UID, SOP instance UID)]`` of the study's DX/CR images; 4xx when it has none or too many."""
        series = self._client.search_for_series(search_filters={"StudyInstanceUID": study}, get_remaining=True)
        found, others = [], {}
        for s in series:
            modality, uid = _value(s, "00080060").upper(), _value(s, "0020000E")
            if modality not in MODALITIES:
                n = _value(s, "00201209", "?")  # NumberOfSeriesRelatedInstances
                others[modality or "missing"] = others.get(modality or "missing", []) + [n]
                continue
            for inst in self._client.search_for_instances(study, uid, get_remaining=True):
                found.append((uid, _value(inst, "00080018")))
        if not found:
            held = ", ".join(f"{m} ({len(v)} series)" for m, v in sorted(others.items())) or "nothing"
            what = "a CT" if "CT" in others else "no radiograph"
            raise StudyError(
                f"study {study}: {what}; it holds {held} and no DX/CR radiograph. PerX2CT reconstructs a CT from two "
                "chest radiographs: send a study with one PA (or AP) and one lateral DX/CR image"
            )
        if len(found) > MAX_RADIOGRAPHS:
            raise StudyError(
                f"study {study}: {len(found)} DX/CR radiographs in {len({s for s, _ in found})} series; PerX2CT needs "
                "exactly two, one PA (or AP) and one lateral"
            )
        return found

    def get_image_uri(self, image_id: str) -> str:
        """A fresh folder ``.../<StudyInstanceUID>/`` holding the study's DX/CR instances (module doc)."""
        study = self.study_uid(image_id)
        instances = self._radiograph_instances(study)
        folder = Path(tempfile.mkdtemp(prefix="req_", dir=self._requests)) / study
        folder.mkdir()
        for i, (series, sop) in enumerate(instances):
            ds = self._client.retrieve_instance(study, series, sop)
            ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
        logger.info("PerX2CT: study %s (asked as %s): %d radiograph(s) fetched", study, image_id, len(instances))
        return str(folder)

    def owns(self, path: str) -> bool:
        """Whether ``path`` is a study folder made by :meth:`get_image_uri`."""
        try:
            return Path(path).resolve().parent.parent == self._requests.resolve()
        except (OSError, ValueError):
            return False

    def release(self, path: str) -> None:
        """Remove a study folder made by :meth:`get_image_uri` (after the inference)."""
        if self.owns(path):
            shutil.rmtree(Path(path).resolve().parent, ignore_errors=True)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        study = self.study_uid(image_id)
        found = self._client.search_for_studies(search_filters={"StudyInstanceUID": study}, limit=1)
        info = {"StudyInstanceUID": study}
        if found:
            ds = found[0]
            for name, tag in (("PatientID", "00100020"), ("StudyDate", "00080020"), ("AccessionNumber", "00080050")):
                info[name] = _value(ds, tag)
        return info

    # --------------------------------------------------------------------------------------------- store
    def store(self, datasets: Sequence[Dataset]) -> str:
        """STOW-RS ``datasets`` (one new series of one study); returns its SeriesInstanceUID.

        Raises :class:`StoreError` when the server reports a failed instance (``FailedSOPSequence``).
        """
        if not datasets:
            raise ValueError("nothing to store")
        study = str(datasets[0].StudyInstanceUID)
        series = {str(ds.SeriesInstanceUID) for ds in datasets}
        if len(series) != 1:
            raise ValueError(f"store() takes one series, got {len(series)}")
        response = self._client.store_instances(list(datasets), study_instance_uid=study)
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise StoreError(f"STOW-RS into study {study}: {len(failed)} of {len(datasets)} instance(s) refused")
        self.invalidate()
        return series.pop()
