"""MONAI Label infer task of PerX2CT: a study (PA + lateral) in, a CT volume with its own affine out.

Everything model-specific comes from the bundle's ``configs/inference.json`` (read with
``monai.bundle.ConfigParser``): ``preprocessing`` (``LoadRadiographsd`` ... -> ``image`` (2, 128, 128)),
``network_def``, ``inferer`` (``ReconstructionInferer`` -> ``pred`` (1, 128, 128, 128)) and the writer
``SaveReconstructiond`` from ``postprocessing`` (which places the volume with
``scripts.inference.items.reconstruction_affine``). Nothing is written twice here.

Why not MONAI Label's ``BundleInferTask``: it appends ``Restored``, which resamples the prediction onto
the *input's* grid - for 2D radiographs in and a 3D CT out that is meaningless - and it replaces the
bundle's loader and writer by its own. This task instead

* resolves the study (2-frame NIfTI, or DICOM DX/CR radiographs paired by view: :mod:`lib.study`) into
  the two radiograph files the bundle's ``preprocessing`` reads; a study it cannot use is answered with
  an HTTP 4xx whose ``detail`` says why (``fastapi.HTTPException``), not a bare 500,
* runs the bundle's ``inferer`` with the bundle's network and checkpoint,
* writes the result with the bundle's own ``SaveReconstructiond`` (only its ``output_dir`` moved to a
  temporary folder), so the returned NIfTI carries the reconstruction's affine: 128^3 voxels of 2.5 mm
  centred on the isocentre (the origin unless the request passes ``isocentre_mm``),
* returns the self-check of the bundle's ``SelfCheckd`` (re-projection scores per view) under ``selfcheck``,
* for a study of the DICOMweb datastore (:class:`lib.dicomweb.StudyDatastore`), turns that NIfTI into a DICOM CT
  series of the source study (:func:`scripts.inference.dicom_ct_series.ct_series`), stores it by STOW-RS and answers
  with JSON only (``series_instance_uid``, ``study_instance_uid``, ``selfcheck``, ...); file-based studies keep
  receiving the NIfTI.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from fastapi import HTTPException
from lib.scripts_path import scripts_on_path
from lib.study import StudyError, resolve_study
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

logger = logging.getLogger(__name__)

__all__ = ["PerX2CTInfer"]


def _radiograph_error(e: BaseException) -> str | None:
    """The message of a ``scripts.transforms.radiograph.RadiographError`` in ``e``'s cause chain, else None."""
    # the served bundle's package: importable once scripts_on_path has loaded it
    from scripts.transforms.radiograph import RadiographError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, RadiographError):
            return str(e)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class PerX2CTInfer(BasicInferTask):
    """Reconstruction infer task built from a bundle folder.

    Size: MONAI Label's ``BasicInferTask`` contract (info, pre-transforms, inferer, post-transforms, writer, the
    call and its refusals) is one object; reading and pairing studies live in ``lib/study.py`` and
    ``lib/dicom_study.py``.

    Args:
        bundle_root: the bundle (``configs/inference.json``, ``configs/metadata.json``, ``scripts/``).
        ckpt_path: the state dict to load; default: the config's ``ckpt_path`` (``models/model.pt``).
        model_preset: the network preset; default: the checkpoint's sidecar ``model.json``
            (:func:`scripts.networks.checkpoint.read_info`), else the config's. Given explicitly, it must match it.
        config_file: the inference config, relative to ``bundle_root`` or absolute.
        dicomweb: the app's :class:`lib.dicomweb.StudyDatastore` when the studies are a DICOMweb root: its
            studies' reconstructions are stored back into them as DICOM CT series.
    """

    def __init__(
        self,
        bundle_root: str,
        ckpt_path: str | None = None,
        model_preset: str | None = None,
        config_file: str = "configs/inference.json",
        preload: bool = False,
        dicomweb=None,
    ) -> None:
        self.dicomweb = dicomweb
        self.bundle_root = str(Path(bundle_root).resolve())
        config = Path(config_file) if Path(config_file).is_absolute() else Path(self.bundle_root) / config_file
        meta_file = Path(self.bundle_root) / "configs" / "metadata.json"
        for f in (config, meta_file):
            if not f.is_file():
                raise FileNotFoundError(f"PerX2CT bundle file not found: {f} (pass --conf bundle_path BUNDLE_ROOT)")
        self.parser = ConfigParser()
        self.parser.read_config(str(config))
        self.parser.read_meta(str(meta_file))
        self.parser["bundle_root"] = self.bundle_root
        if model_preset:
            self.parser["model_preset"] = model_preset
        metadata = json.loads(meta_file.read_text())

        with scripts_on_path(self.bundle_root, restore=False):
            ckpt = ckpt_path or self.parser.get_parsed_content("ckpt_path")
            if not Path(ckpt).is_file():
                raise FileNotFoundError(
                    f"PerX2CT checkpoint not found: {ckpt}. Pass --conf ckpt_path MODEL.pt (a state dict saved from "
                    f"network_def with the same model_preset), or put it at models/model.pt (see large_files.yml)"
                )
            self.parser["ckpt_path"] = str(Path(ckpt).resolve())  # the config builds the network its sidecar names
            from scripts.networks.checkpoint import read_info  # the served bundle's package (on the path here)

            info = read_info(ckpt) or {}
            network = self.parser.get_parsed_content("network_def", instantiate=True)
            self._writer_template = self._find_writer()
            configured = (
                self.parser.get_parsed_content("network_info")["model_preset"]
                if "network_info" in self.parser
                else self.parser.get_parsed_content("model_preset")
            )
            self.model_preset = str(model_preset or info.get("model_preset") or configured)

        self.version = metadata.get("version")
        super().__init__(
            path=str(Path(ckpt).resolve()),
            network=network,
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=(
                f"PerX2CT {self.version}: reconstructs a chest CT volume (Hounsfield units) from a PA and a lateral "
                "chest radiograph"
            ),
            input_key="image",
            output_label_key="pred",
            load_strict=True,
            preload=preload,
        )

    def info(self) -> dict[str, Any]:
        """What ``/info`` tells a viewer: the task, its input, its output and how to call it."""
        i = super().info()
        i["version"] = self.version
        i["model_preset"] = self.model_preset
        i["task"] = "reconstruction: chest CT from two radiographs (not a segmentation; no labels)"
        i["input"] = {
            "views": ["PA (or AP) chest radiograph", "lateral chest radiograph"],
            "study_layouts": [
                "<id>.nii.gz: 2-frame NIfTI (W, H, 2), frame 0 PA, frame 1 lateral (python -m bundle make_study)",
                "DICOM DX/CR: two series of one image or one series of two images (a .zip, a folder or .dcm), "
                "paired by ViewPosition (PA/AP, LL/RL/LATERAL), else ViewCodeSequence, else the other view",
            ],
            "refused": "one view, two of the same view, a single PNG/2D image, a CT: HTTP 4xx with the reason",
        }
        frame = self._writer_template.frame  # scripts.frame.VolumeFrame: the output cube
        c = frame.centre_voxel
        lo, hi = frame.target_to_hu(0.0), frame.target_to_hu(1.0)
        i["output"] = {
            "format": (
                "NIfTI (.nii.gz), float32; for a study of a DICOMweb datastore, a DICOM CT series stored into that "
                "study (STOW-RS) and a JSON answer with its series_instance_uid"
            ),
            "shape": [int(frame.shape)] * 3,
            "spacing_mm": float(frame.spacing_mm),
            "size_mm": float(frame.size_mm),
            "units": (
                f"Hounsfield units, {lo:g} to {hi:g}" if self._writer_template.output_hu else "target scale [0, 1]"
            ),
            "frame": (
                f"array axes toward the patient's Left, Posterior, Superior; RAS affine; voxel ({c:g}, {c:g}, {c:g}) "
                "is the X-ray isocentre (the origin unless params isocentre_mm [x, y, z] LPS mm)"
            ),
            "as": "a new image volume (not a label map): load it as a volume in the viewer",
        }
        i["call"] = (
            "POST /infer/perx2ct?image=<study id>&output=image (or a study file upload: file=@study.zip); DICOMweb: "
            "POST /infer/perx2ct?image=<StudyInstanceUID or a SeriesInstanceUID of the study> -> JSON"
        )
        return i

    def __call__(self, request, callbacks=None):
        """Resolve the study into its two views, then run the bundle's pipeline; refusals are HTTP 4xx."""
        folder = tempfile.mkdtemp(prefix="perx2ct_study_")
        study = request.get("image")
        pacs = isinstance(study, str) and self.dicomweb is not None and self.dicomweb.owns(study)
        try:
            if not isinstance(study, str):
                raise StudyError(f"PerX2CT expects a study (a file or a folder), got {type(study).__name__}")
            views = resolve_study(study, folder)
            name = Path(study.rstrip("/")).name
            case_id = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
            if pacs:
                case_id = name  # the StudyInstanceUID (Path.stem would cut its last component)
            logger.info(
                "PerX2CT study %s (%s): PA %s, lateral %s", name, views["layout"], views["pa"], views["lateral"]
            )
            request = {**request, "pa": views["pa"], "lateral": views["lateral"], "case_id": case_id}
            request["perx2ct_workdir"] = folder  # SelfCheckd's files go there, not into the bundle
            try:
                result_file, result_json = super().__call__(request, callbacks)
            except Exception as e:  # the bundle's reader refusing a radiograph is the client's error too
                reason = _radiograph_error(e)
                if reason is None:
                    raise
                raise StudyError(f"{name}: {reason}") from e
            if pacs:
                try:
                    result_json = self._store(result_file, views, result_json)
                finally:
                    os.unlink(result_file)
                return None, result_json  # JSON only: the CT is in the study
            return result_file, result_json
        except StudyError as e:
            logger.warning("PerX2CT refused %s: %s", request.get("image"), e)
            raise HTTPException(status_code=e.status_code, detail=str(e)) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if pacs:
                self.dicomweb.release(study)

    def _store(self, nifti: str, views: dict, result: dict) -> dict:
        """The reconstruction ``nifti`` as a DICOM CT series of the radiographs' study, stored by STOW-RS."""
        import nibabel as nib
        import pydicom

        # the served bundle's package: importable once scripts_on_path has loaded it
        from scripts.inference.dicom_ct_series import ct_series

        img = nib.load(nifti)
        sources = [pydicom.dcmread(views[v], stop_before_pixels=True) for v in ("pa", "lateral")]
        datasets = ct_series(np.asarray(img.dataobj, dtype=np.float32), img.affine, sources)
        series = self.dicomweb.store(datasets)
        study = str(sources[0].StudyInstanceUID)
        logger.info("PerX2CT: stored CT series %s (%d slices) into study %s", series, len(datasets), study)
        return {
            **result,
            "series_instance_uid": series,
            "study_instance_uid": study,
            "instances": len(datasets),
            "source_sop_instance_uids": {v: str(s.SOPInstanceUID) for v, s in zip(("pa", "lateral"), sources)},
        }

    def _find_writer(self):
        # the served bundle's package: importable once scripts_on_path has loaded it
        from scripts.inference.items import SaveReconstructiond

        post = self.parser.get_parsed_content("postprocessing", instantiate=True)
        transforms = list(post.transforms) if isinstance(post, Compose) else list(post or [])
        writers = [t for t in transforms if isinstance(t, SaveReconstructiond)]
        if len(writers) != 1:
            raise ValueError(
                f"{self.bundle_root}/configs/inference.json: postprocessing must contain exactly one "
                f"SaveReconstructiond, found {len(writers)}"
            )
        return writers[0]

    def _parsed_list(self, key: str) -> list[Callable]:
        with scripts_on_path(self.bundle_root, restore=False):
            c = self.parser.get_parsed_content(key, instantiate=True)
        return list(c.transforms) if isinstance(c, Compose) else list(c or [])

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return self._parsed_list("preprocessing")

    def inferer(self, data=None):
        with scripts_on_path(self.bundle_root, restore=False):
            return self.parser.get_parsed_content("inferer", instantiate=True)

    def post_transforms(self, data=None) -> Sequence[Callable]:
        # the served bundle's package: importable once scripts_on_path has loaded it
        from scripts.inference.items import SaveReconstructiond

        transforms = [t for t in self._parsed_list("postprocessing") if not isinstance(t, SaveReconstructiond)]
        workdir = (data or {}).get("perx2ct_workdir")
        for t in transforms:
            if workdir and hasattr(t, "output_dir"):  # SelfCheckd: its JSON/PNG into the request's folder
                t.output_dir = Path(workdir) / "selfcheck"
        return transforms

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        """Write with the bundle's ``SaveReconstructiond`` into a temporary folder; return the NIfTI."""
        out_dir = Path(tempfile.mkdtemp(prefix="perx2ct_out_"))
        try:
            writer = copy.copy(self._writer_template)
            writer.output_dir = out_dir
            key = self.output_label_key
            d = writer({k: v for k, v in data.items() if k not in ("image",)})
            written = Path(d[f"{key}_path"])
            result = tempfile.NamedTemporaryFile(prefix=f"{written.name[:-7]}_", suffix=".nii.gz", delete=False).name
            shutil.move(str(written), result)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        iso = data.get("isocentre_mm", (0.0, 0.0, 0.0))
        iso = [float(v) for v in (iso.tolist() if hasattr(iso, "tolist") else iso)]
        pred = data[key]
        shape = list(pred.shape[-3:]) if torch.is_tensor(pred) or hasattr(pred, "shape") else None
        selfcheck = data.get("selfcheck")
        return result, {
            "case_id": str(data.get("case_id", "")),
            "shape": shape,
            "spacing_mm": float(writer.frame.spacing_mm),
            "isocentre_mm": iso,
            "units": "HU" if writer.output_hu else "target scale [0, 1]",
            "selfcheck": json.loads(json.dumps(selfcheck, default=float)) if selfcheck is not None else None,
        }
