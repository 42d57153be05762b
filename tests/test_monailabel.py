"""MONAI Label integration: a real server, driven by MONAI Label's own client (``MONAILabelClient``),
reconstructs studies made from the example CT (LIDC-IDRI-0001) with the bundle's own DRR transforms, in
every layout a viewer or PACS sends, and refuses everything else with a 4xx and a message.

One server for the module (start-ups are the expensive part), started exactly as ``docs/monailabel.md``
says (``python -m bundle.monailabel_app start_server ...``) on 127.0.0.1 and a free port, stopped by
terminating its process group. Time limits: 120 s to start, 60 s per request; the server log is printed
on any failure. Layouts: a 2-frame NIfTI; two DICOM DX series (PA first, and lateral first as an upload);
one DICOM series of two images, one without ViewPosition. Refused: one view, two PA views, views that
cannot be told apart, a PNG, a CT.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # a MONAI Label server process

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "bundle" / "monailabel_app"
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
STUDY_ID = "LIDC-IDRI-0001"
DETECTOR_MM = 500.0  # the perx2ct geometry's detector side: 128 px of the DRR PNGs cover it


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, small_checkpoint) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def study(tmp_path_factory, example_raw_dir) -> dict:
    """``STUDIES/LIDC-IDRI-0001.nii.gz`` from 8-bit PNG DRRs of the example CT (the prepare protocol)."""
    from monai.transforms import Compose
    from PIL import Image
    from scripts.transforms.ct import LoadCTd, NormalizeCTd
    from scripts.transforms.drr import DRRd

    from bundle.monailabel_app.lib.study import make_study, read_study

    ct_dir = example_raw_dir / STUDY_ID
    d = Compose([LoadCTd(keys="ct"), NormalizeCTd(keys="ct"), DRRd(keys="ct")])({"ct": str(ct_dir)})
    root = tmp_path_factory.mktemp("monailabel")
    pngs, pixels = {}, {}
    for view in ("pa", "lateral"):
        img = d[view][0].numpy()  # (rows, cols) in [0, 1], already 8-bit levels
        # stretched to a maximum of 255, so the bundle's reader gives the DICOM copy (normalised by its own
        # maximum) and the PNG (a network input, taken as it is) the same network input
        pixels[view] = np.round(img / img.max() * 255).astype(np.uint8)
        pngs[view] = root / f"{view}.png"
        Image.fromarray(pixels[view]).save(pngs[view])
    studies = root / "studies"
    make_study(str(pngs["pa"]), str(pngs["lateral"]), str(studies / f"{STUDY_ID}.nii.gz"))
    frames = read_study(studies / f"{STUDY_ID}.nii.gz")
    with Image.open(pngs["pa"]) as im:  # the study holds the PNG's pixels, in MONAI's (W, H) order
        np.testing.assert_array_equal(frames["pa"], np.asarray(im).T)
    return {"studies": studies, "root": root, "png": pngs, "pixels": pixels, "ct_dir": ct_dir}


# ------------------------------------------------------------------------------------------- DICOM
def _dicom(dicom_bytes, pixels: np.ndarray, view_position: str | None, series_uid: str, series_number: int,
           study_uid: str, modality: str = "DX", instance: int = 1) -> bytes:  # fmt: skip
    """One DICOM Part 10 file: an 8-bit grey image with ``ImagerPixelSpacing`` covering the 500 mm detector."""
    spacing = DETECTOR_MM / pixels.shape[0]
    attributes = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
    attributes.update(SeriesNumber=series_number, InstanceNumber=instance)
    if view_position is not None:
        attributes["ViewPosition"] = view_position
    if modality == "CT":
        attributes.update(PixelSpacing=[spacing, spacing], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
        attributes["ImagePositionPatient"] = [0, 0, float(instance)]
    else:
        attributes["ImagerPixelSpacing"] = [spacing, spacing]
    return dicom_bytes(pixels, modality, bits=8, **attributes)


def _ct_slice(dcm, rng, series_uid: str, study_uid: str, instance: int) -> bytes:
    pixels = rng.integers(0, 255, (64, 64)).astype(np.uint8)
    return dcm(pixels, None, series_uid, 1, study_uid, modality="CT", instance=instance)


def _zip(path: Path, files: list[tuple[str, bytes]]) -> Path:
    """A study archive; entries in the order given (the order a PACS export happened to use)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files:
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def dicom(study, dicom_bytes) -> dict:
    """The study's two DRRs as DICOM DX studies in several layouts, and the inputs the server must refuse."""
    from pydicom.uid import generate_uid

    dcm = functools.partial(_dicom, dicom_bytes)
    px, out = study["pixels"], study["root"] / "dicom"
    out.mkdir()
    uid = generate_uid()
    s_pa, s_lat = generate_uid(), generate_uid()
    pa = dcm(px["pa"], "PA", s_pa, 1, uid)
    lat = dcm(px["lateral"], "LL", s_lat, 2, uid)
    one = generate_uid()
    ct_series = generate_uid()
    rng = np.random.default_rng(0)
    return {
        # two series of one image each; the lateral's series comes first in the second archive
        "pa_first": _zip(out / "pa_first.zip", [("IMG0001.dcm", pa), ("IMG0002.dcm", lat)]),
        "lateral_first": _zip(out / "lateral_first.zip", [("A/1.dcm", dcm(px["lateral"], "LL", s_lat, 1, uid)),
                                                          ("B/2.dcm", dcm(px["pa"], "PA", s_pa, 2, uid))]),
        # one series of two images, lateral first; the PA has no ViewPosition (rule 3: the other view)
        "one_series": _zip(out / "one_series.zip", [("1.dcm", dcm(px["lateral"], "LATERAL", one, 1, uid)),
                                                    ("2.dcm", dcm(px["pa"], None, one, 1, uid, instance=2))]),
        "one_view": _zip(out / "one_view.zip", [("IMG0001.dcm", pa)]),
        "two_pa": _zip(out / "two_pa.zip", [("1.dcm", pa), ("2.dcm", dcm(px["lateral"], "AP", s_lat, 2, uid))]),
        "no_view": _zip(out / "no_view.zip", [("1.dcm", dcm(px["pa"], None, s_pa, 1, uid)),
                                              ("2.dcm", dcm(px["lateral"], "", s_lat, 2, uid))]),
        "ct": _zip(out / "ct.zip", [(f"CT{i}.dcm", _ct_slice(dcm, rng, ct_series, uid, i)) for i in range(1, 4)]),
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path, start_s: float) -> None:
        self.proc, self.url, self.log, self.start_s = proc, url, log, start_s
        from monailabel.client import MONAILabelClient

        self.client = MONAILabelClient(url, tmpdir=str(log.parent / "client"))

    def log_tail(self, n: int = 80) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def fail(self, message: str):
        pytest.fail(f"{message}\n--- MONAI Label server log ({self.log}) ---\n{self.log_tail()}", pytrace=False)

    def call(self, what: str, fn, *args, **kwargs):
        """A client call; any client error fails the test with the server log."""
        from monailabel.client.client import MONAILabelClientException

        try:
            return fn(*args, **kwargs)
        except MONAILabelClientException as e:
            self.fail(f"{what}: {e.msg}")

    def refused(self, file: Path) -> tuple[int, str]:
        """Upload ``file`` to ``/infer/perx2ct``; returns the HTTP status and the ``detail`` the client got."""
        from monailabel.client.client import MONAILabelClientException

        try:
            self.client.infer("perx2ct", "", {}, file=str(file))
        except MONAILabelClientException as e:
            m = re.fullmatch(r"Status: (\d+); Response: (.*)", e.msg, re.S)
            assert m, e.msg
            return int(m.group(1)), json.loads(m.group(2))["detail"]
        self.fail(f"{file.name} was reconstructed; expected a refusal")


@pytest.fixture(scope="module")
def server(study, small_ckpt):
    port = _free_port()
    log = study["root"] / "server.log"
    cmd = [
        sys.executable, "-m", "bundle.monailabel_app", "start_server",
        "--app", str(APP), "--studies", str(study["studies"]),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "models", "perx2ct",
        "--conf", "bundle_path", str(REPO),
        "--conf", "ckpt_path", str(small_ckpt),
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2", MONAI_LABEL_DATASTORE_AUTO_RELOAD="false",
               MONAI_LABEL_SESSION_PATH=str(study["root"] / "sessions"))  # fmt: skip
    start = time.monotonic()
    with open(log, "w") as log_fp:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_fp, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(proc, f"http://127.0.0.1:{port}", log, 0.0)
    try:
        while True:
            if proc.poll() is not None:
                srv.fail(f"server exited with status {proc.returncode} before answering: {' '.join(cmd)}")
            try:
                with urllib.request.urlopen(srv.url + "/info/", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - start > START_TIMEOUT_S:
                srv.fail(f"server did not answer /info/ within {START_TIMEOUT_S} s")
            time.sleep(1.0)
        srv.start_s = time.monotonic() - start
        print(f"\nMONAI Label server up in {srv.start_s:.1f} s")
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_info_describes_the_model(server):
    """``/info`` tells a viewer what the model does: inputs, output volume and frame, the call, no labels."""
    info = server.call("info", server.client.info)
    model = info["models"].get("perx2ct")
    if model is None:
        server.fail(f"model perx2ct not served; /info/ models: {list(info['models'])}")
    assert model["model_preset"] == "small", "the preset comes from the checkpoint's sidecar, no flag given"
    assert "PA" in " ".join(model["input"]["views"]) and "lateral" in " ".join(model["input"]["views"])
    assert any("DICOM" in layout and "ViewPosition" in layout for layout in model["input"]["study_layouts"])
    assert model["output"]["shape"] == [128, 128, 128] and model["output"]["spacing_mm"] == 2.5
    assert "Hounsfield" in model["output"]["units"] and "isocentre" in model["output"]["frame"]
    assert "chest CT" in model["description"] and "PA" in info["description"]
    assert not model["labels"], "a reconstruction has no labels"
    listed = server.call("datastore", server.client.datastore)
    assert STUDY_ID in listed["objects"], f"study not listed by the datastore: {list(listed['objects'])}"


def _volume(server, path: str | None, what: str):
    """Load the NIfTI the client saved; returns (nibabel image, array)."""
    if path is None or not Path(path).is_file():
        server.fail(f"{what}: no volume in the response")
    try:
        img = nib.load(path)
        return img, np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001
        server.fail(f"{what}: the response is not a NIfTI volume: {e}")


def _reconstruct_id(server, image_id: str, params: dict | None = None):
    start = time.monotonic()
    out, result = server.call(f"infer {image_id}", server.client.infer, "perx2ct", image_id, params or {})
    seconds = time.monotonic() - start
    img, vol = _volume(server, out, f"infer {image_id}")
    return img, vol, result, seconds


@pytest.fixture(scope="module")
def reference_hu(study, small_network) -> np.ndarray:
    """The study's reconstruction made here, without the server: the same seeded ``small`` weights as the
    served checkpoint, the PNGs read by the bundle's radiograph loader, the network's axial slices, HU."""
    from scripts.frame import FRAME
    from scripts.transforms.radiograph import LoadRadiographsd

    image = LoadRadiographsd()({"pa": str(study["png"]["pa"]), "lateral": str(study["png"]["lateral"])})["image"]
    with torch.no_grad():
        pred = small_network(0).eval().reconstruct(torch.as_tensor(image)[None].float(), axes=[0])
    return FRAME.target_to_hu(np.clip(pred[0, 0].numpy(), 0, 1))


def _check_volume(img, vol, iso_lps, reference_hu):
    from scripts.inference.items import reconstruction_affine

    assert vol.shape == (128, 128, 128)
    # the served volume is the bundle's reconstruction of these X-rays with these weights (HU, written as float32)
    np.testing.assert_allclose(vol, reference_hu, atol=0.05)
    np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), [2.5, 2.5, 2.5], atol=1e-5)
    np.testing.assert_allclose(img.affine, reconstruction_affine(iso_lps), atol=1e-4)
    centre_ras = img.affine @ np.array([63.5, 63.5, 63.5, 1.0])
    np.testing.assert_allclose(centre_ras[:3], [-iso_lps[0], -iso_lps[1], iso_lps[2]], atol=1e-3)


@pytest.fixture(scope="module")
def nifti_volume(server):
    """Layout (a): the 2-frame NIfTI study in the datastore, reconstructed by id."""
    img, vol, result, seconds = _reconstruct_id(server, STUDY_ID)
    print(f"\ninference of the NIfTI study (request to response): {seconds:.2f} s")
    return img, vol, result


@pytest.fixture(scope="module")
def dicom_volume(server, dicom):
    """Layout (b): two DICOM DX series (PA first), uploaded to the datastore, reconstructed by id."""
    server.call("upload", server.client.upload_image, str(dicom["pa_first"]), "dicom-pa-first")
    img, vol, result, seconds = _reconstruct_id(server, "dicom-pa-first")
    print(f"\ninference of the DICOM study: {seconds:.2f} s")
    return img, vol, result


def test_nifti_study(nifti_volume, reference_hu):
    """Default: the isocentre of a pair of radiographs is unknown and taken as the origin."""
    img, vol, result = nifti_volume
    _check_volume(img, vol, (0.0, 0.0, 0.0), reference_hu)
    assert result["case_id"] == STUDY_ID and result["units"] == "HU"


def test_dicom_two_series(dicom_volume, nifti_volume, reference_hu):
    """The DICOM DX pair (8-bit, ImagerPixelSpacing covering the 500 mm detector) reaches the network as the
    same two images as the PNG study, so the volume is the NIfTI study's: the views were not swapped."""
    img, vol, _ = dicom_volume
    _check_volume(img, vol, (0.0, 0.0, 0.0), reference_hu)
    np.testing.assert_array_equal(vol, nifti_volume[1])


def test_dicom_lateral_first_is_identical(server, dicom, dicom_volume):
    """The lateral's series first (and sent as a file upload, not through the datastore): the same volume."""
    out, _ = server.call("infer upload", server.client.infer, "perx2ct", "", {}, file=str(dicom["lateral_first"]))
    _, vol = _volume(server, out, "lateral-first study")
    np.testing.assert_array_equal(vol, dicom_volume[1])


def test_dicom_one_series_two_images(server, dicom, dicom_volume):
    """One series holding both images, lateral first, the PA without ViewPosition: the other view, PA."""
    server.call("upload", server.client.upload_image, str(dicom["one_series"]), "dicom-one-series")
    _, vol, _, _ = _reconstruct_id(server, "dicom-one-series")
    np.testing.assert_array_equal(vol, dicom_volume[1])


def test_refuses_one_view(server, dicom):
    status, detail = server.refused(dicom["one_view"])
    assert status == 422 and "one radiograph only" in detail and "ViewPosition PA" in detail, (status, detail)
    assert "a PA (or AP) and a lateral" in detail


def test_refuses_two_of_the_same_view(server, dicom):
    status, detail = server.refused(dicom["two_pa"])
    assert status == 422 and "two PA/AP radiographs" in detail, (status, detail)


def test_refuses_views_it_cannot_tell_apart(server, dicom):
    status, detail = server.refused(dicom["no_view"])
    assert status == 422 and "cannot tell the PA from the lateral" in detail and "set ViewPosition" in detail


def test_refuses_a_png(server, study):
    status, detail = server.refused(study["png"]["pa"])
    assert status == 415 and "a single 2D image (PNG) is one radiograph" in detail, (status, detail)
    assert "make_study" in detail


def test_refuses_a_ct(server, dicom):
    status, detail = server.refused(dicom["ct"])
    assert status == 422 and "a CT (3 image(s)) is not an input of PerX2CT" in detail, (status, detail)


def test_monailabel_converted_one_series_study_is_never_swapped(server, study, dicom_bytes, dicom_volume):
    """Issue 20's silent wrong answer: a one-series DX study (lateral first) stacked into a 2-frame NIfTI the way
    MONAI Label's DICOMweb datastore does with ``CONVERT_TO_NIFTI`` (``monailabel.datastore.utils.convert
    .dicom_to_nifti``). Its frames carry no view, so the server must refuse it (4xx) or give the correctly paired CT;
    before the fix it answered 200 with the views swapped (frame 0, the lateral, read as the PA)."""
    from monailabel.client.client import MONAILabelClientException
    from pydicom.uid import generate_uid

    from bundle.monailabel_app.lib import compat

    compat.install()  # MONAI Label's convert module imports pydicom_seg (see lib/compat.py)
    from monailabel.datastore.utils.convert import dicom_to_nifti

    px, folder = study["pixels"], study["root"] / "one_series_for_conversion"
    folder.mkdir()
    uid, one = generate_uid(), generate_uid()
    (folder / "1.dcm").write_bytes(_dicom(dicom_bytes, px["lateral"], "LL", one, 1, uid, instance=1))
    (folder / "2.dcm").write_bytes(_dicom(dicom_bytes, px["pa"], "PA", one, 1, uid, instance=2))
    converted = Path(dicom_to_nifti(str(folder)))
    stacked = np.asarray(nib.load(str(converted)).dataobj)
    assert stacked.shape == (128, 128, 2), stacked.shape
    # the reproduction holds: MONAI Label's conversion puts the lateral first
    np.testing.assert_array_equal(stacked[..., 0].T, px["lateral"])
    target = study["root"] / "converted_one_series.nii.gz"
    converted.replace(target)
    try:
        out, _ = server.client.infer("perx2ct", "", {}, file=str(target))
    except MONAILabelClientException as e:
        m = re.fullmatch(r"Status: (\d+); Response: (.*)", e.msg, re.S)
        assert m and 400 <= int(m.group(1)) < 500, e.msg
        detail = json.loads(m.group(2))["detail"]
        assert "does not say which frame is the PA" in detail and "make_study" in detail, detail
        return
    _, vol = _volume(server, out, "converted one-series study")
    np.testing.assert_array_equal(vol, dicom_volume[1], err_msg="a swapped CT was returned")
