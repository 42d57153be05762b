"""The PACS path with the real parts: Orthanc (Debian, DICOMweb plugin) holds DX studies, the MONAI Label server
with this app (started offline, ``--studies http://127.0.0.1:PORT/dicom-web``, no environment variable) reconstructs
a study by its StudyInstanceUID (or a SeriesInstanceUID of it) and stores the CT as a DICOM series into the same
study; the series is read back through WADO-RS and checked against the NIfTI the same server returns for the same
radiographs uploaded as a file.

Also: studies (not series) are listed, a new study shows up within the list's short cache, a one-series study
(lateral first) gives the same CT as the two-series one (paired by ViewPosition, never by order), bad inputs get a
4xx with a message and the server keeps serving, and (``slow`` load test) 20 concurrent requests each end with their
own study's CT or a refusal, with the server's memory measured.
"""

from __future__ import annotations

import threading
import time
import zipfile

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch
from pacs_services import dx_bytes, orthanc, pacs_ckpt, start_monailabel, upload_study  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # Orthanc and a MONAI Label server process

LOAD_REQUESTS = 20


@pytest.fixture(scope="module")
def drr(tmp_path_factory, example_raw_dir) -> dict:
    from pacs_services import drr_pixels

    return drr_pixels(example_raw_dir, tmp_path_factory.mktemp("drr"))


@pytest.fixture(scope="module")
def server(orthanc, pacs_ckpt, tmp_path_factory):  # noqa: F811 - the imported fixtures
    srv = start_monailabel(orthanc.dicomweb, pacs_ckpt, tmp_path_factory.mktemp("monailabel"))
    print(f"\nMONAI Label (DICOMweb studies, offline) up in {srv.start_s:.1f} s")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def two_series(orthanc, dicom_bytes, drr) -> dict:  # noqa: F811
    return upload_study(orthanc, dicom_bytes, drr, "PACS-TWO-SERIES", "two_series")


@pytest.fixture(scope="module")
def reference_hu(drr, small_network) -> np.ndarray:
    """The reconstruction of the DRR pair made here without any server (same seeded weights as the checkpoint)."""
    from scripts.frame import FRAME
    from scripts.transforms.radiograph import LoadRadiographsd

    image = LoadRadiographsd()({"pa": str(drr["png"]["pa"]), "lateral": str(drr["png"]["lateral"])})["image"]
    with torch.no_grad():
        pred = small_network(0).eval().reconstruct(torch.as_tensor(image)[None].float(), axes=[0])
    return FRAME.target_to_hu(np.clip(pred[0, 0].numpy(), 0, 1))


def _infer(server, image: str, timeout: float = 300) -> dict:
    start = time.monotonic()
    status, body = server.post_infer(image, timeout=timeout)
    if status != 200 or not isinstance(body, dict):
        server.fail(f"infer {image}: HTTP {status}: {body!r:.400}")
    body["_seconds"] = time.monotonic() - start
    return body


def _read_series(orthanc, study: str, series: str) -> list:  # noqa: F811
    """The series' instances through WADO-RS (MONAI Label's DICOMweb client class), sorted by InstanceNumber."""
    from bundle.monailabel_app.lib import compat

    compat.install()  # monailabel.datastore imports pydicom_seg (see lib/compat.py)
    from monailabel.datastore.dicom import DICOMwebClientX  # fixes Orthanc's multipart content type (dicom.py:33-39)

    client = DICOMwebClientX(orthanc.dicomweb)
    client._session.trust_env = False  # 127.0.0.1: no proxy
    return sorted(client.retrieve_series(study, series), key=lambda ds: int(ds.InstanceNumber))


def _volume_from_series(datasets) -> tuple[np.ndarray, np.ndarray]:
    """``(HU (X, Y, Z), RAS affine)`` from a CT series read back (pixel (r, c) of slice k = voxel (c, r, k))."""
    first, last = datasets[0], datasets[-1]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in first.PixelSpacing)  # row spacing (between rows), column spacing
    p0 = np.array([float(v) for v in first.ImagePositionPatient])
    pn = np.array([float(v) for v in last.ImagePositionPatient])
    step = (pn - p0) / (len(datasets) - 1)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dc, col_dir * dr, step, p0
    vol = np.stack([ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets], axis=-1)
    return vol, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _series_of(orthanc, study: str) -> dict:  # noqa: F811
    """``{SeriesInstanceUID: Modality}`` of a study, from Orthanc's REST API."""
    out = {}
    for s in orthanc.get_json(f"/studies/{_orthanc_study_id(orthanc, study)}/series"):
        tags = s["MainDicomTags"]
        out[tags["SeriesInstanceUID"]] = tags.get("Modality", "")
    return out


def _orthanc_study_id(orthanc, study_uid: str) -> str:  # noqa: F811
    import json as _json
    import urllib.request

    req = urllib.request.Request(
        orthanc.url + "/tools/lookup", data=study_uid.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as r:
        found = [x for x in _json.loads(r.read()) if x["Type"] == "Study"]
    assert found, f"study {study_uid} not in Orthanc"
    return found[0]["ID"]


@pytest.fixture(scope="module")
def stored(server, orthanc, two_series) -> dict:  # noqa: F811
    """The two-series study reconstructed by its StudyInstanceUID, and its CT series read back by WADO-RS."""
    result = _infer(server, two_series["study"])
    print(f"\nreconstruction of a DICOMweb study, stored back by STOW-RS: {result['_seconds']:.2f} s")
    datasets = _read_series(orthanc, two_series["study"], result["series_instance_uid"])
    return {"result": result, "datasets": datasets}


def test_server_started_offline_with_a_dicomweb_root(server):
    """Started with HTTP(S)_PROXY on a closed port (no internet): MONAI Label's dcmqi download was not attempted."""
    log = server.log.read_text(errors="replace")
    assert "dcmqi" not in log.lower() or "not downloaded" in log, server.log_tail()
    info = server.client.info()
    assert "perx2ct" in info["models"]


def test_lists_studies_not_series(server, orthanc, two_series, dicom_bytes, drr):  # noqa: F811
    """Datastore items are StudyInstanceUIDs (DX studies listed with no filter setting); a new study shows up within
    the list's short cache (MONAI Label's own caches lists for 7200 s)."""
    listed = _wait_listed(server, two_series["study"])
    assert not set(two_series["series"].values()) & set(listed), "series must not be items"
    later = upload_study(orthanc, dicom_bytes, drr, "PACS-LATER", "two_series")
    listed = _wait_listed(server, later["study"])
    assert two_series["study"] in listed


def _wait_listed(server, study: str, within_s: float = 15.0) -> dict:
    """The datastore's items once ``study`` is among them; fails if it stays hidden ``within_s`` seconds (the list
    is cached 10 s, ``lib.dicomweb.LIST_TTL_S``)."""
    deadline = time.monotonic() + within_s
    while True:
        listed = server.client.datastore()["objects"]
        if study in listed:
            return listed
        assert time.monotonic() < deadline, f"study {study} stayed hidden for more than {within_s:g} s: {list(listed)}"
        time.sleep(1.0)


def test_ct_series_is_stored_into_the_same_study(stored, orthanc, two_series):  # noqa: F811
    result, datasets = stored["result"], stored["datasets"]
    assert result["study_instance_uid"] == two_series["study"]
    series = _series_of(orthanc, two_series["study"])
    assert series.get(result["series_instance_uid"]) == "CT", series
    assert len(datasets) == 128 == result["instances"]
    ds = datasets[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert ds.StudyInstanceUID == two_series["study"] and ds.PatientID == two_series["patient_id"]
    assert ds.SeriesInstanceUID not in two_series["series"].values()
    assert len({d.SOPInstanceUID for d in datasets}) == 128 and len({d.FrameOfReferenceUID for d in datasets}) == 1
    refs = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
    assert refs == set(two_series["sop"].values())
    assert set(result["source_sop_instance_uids"].values()) == set(two_series["sop"].values())
    check = result["selfcheck"]
    assert set(check["views"]) == {"pa", "lateral"} and np.isfinite(check["views"]["pa"]["ncc"]), check
    assert isinstance(check["consistent"], bool)


def test_series_geometry_and_values_match_the_nifti(stored, server, dicom_bytes, drr, reference_hu, tmp_path):
    """The series read back through WADO-RS has the NIfTI's affine (to the precision of DICOM DS strings) and its
    values (to the 1 HU of the stored integers); the NIfTI is what the same server returns for the same two
    radiographs uploaded as a file, and both are the reconstruction made here without a server."""
    from scripts.inference.items import reconstruction_affine

    vol, affine = _volume_from_series(stored["datasets"])
    from pydicom.uid import generate_uid

    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pa.dcm", dx_bytes(dicom_bytes, drr["pa"], "PA", study, s1))
        zf.writestr("lat.dcm", dx_bytes(dicom_bytes, drr["lateral"], "LL", study, s2))
    out, _ = server.client.infer("perx2ct", "", {}, file=str(archive))
    nifti = nib.load(out)
    np.testing.assert_allclose(affine, nifti.affine, rtol=0, atol=1e-9)
    np.testing.assert_allclose(affine, reconstruction_affine((0.0, 0.0, 0.0)), rtol=0, atol=1e-9)
    expected = np.asarray(nifti.dataobj)
    assert vol.shape == expected.shape == (128, 128, 128)
    assert np.abs(vol - expected).max() <= 0.5 + 1e-6  # rounded to whole HU
    np.testing.assert_allclose(expected, reference_hu, atol=0.05)


def test_series_uid_is_expanded_to_its_study(server, orthanc, two_series, stored):  # noqa: F811
    """``image=<lateral's SeriesInstanceUID>``: the same study is reconstructed (same values), stored into it."""
    result = _infer(server, two_series["series"]["lateral"])
    assert result["study_instance_uid"] == two_series["study"]
    assert result["series_instance_uid"] != stored["result"]["series_instance_uid"]
    assert _series_of(orthanc, two_series["study"]).get(result["series_instance_uid"]) == "CT"
    vol, _ = _volume_from_series(_read_series(orthanc, two_series["study"], result["series_instance_uid"]))
    np.testing.assert_array_equal(vol, _volume_from_series(stored["datasets"])[0])


def test_one_series_lateral_first_is_paired_by_view(server, orthanc, dicom_bytes, drr, stored):  # noqa: F811
    """Both images in one series, the lateral first (issue 20's swapped case): the two-series study's CT."""
    study = upload_study(orthanc, dicom_bytes, drr, "PACS-ONE-SERIES", "one_series")
    result = _infer(server, study["study"])
    vol, _ = _volume_from_series(_read_series(orthanc, study["study"], result["series_instance_uid"]))
    np.testing.assert_array_equal(vol, _volume_from_series(stored["datasets"])[0])


def _refused(server, image: str) -> tuple[int, str]:
    status, body = server.post_infer(image, timeout=120)
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), body
    return status, body["detail"]


def test_bad_studies_get_a_4xx_and_the_server_keeps_serving(server, orthanc, dicom_bytes, drr, two_series):  # noqa
    from pydicom.uid import generate_uid

    # a malformed radiograph: its pixel data is shorter than Rows x Columns says
    bad_study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    orthanc.upload(dx_bytes(dicom_bytes, drr["pa"], "PA", bad_study, s1))
    broken = dx_bytes(dicom_bytes, drr["lateral"][:40], "LL", bad_study, s2, Rows=128)
    orthanc.upload(broken)
    status, detail = _refused(server, bad_study)
    assert "pixel" in detail.lower(), detail
    # three radiographs
    three = upload_study(orthanc, dicom_bytes, drr, "PACS-THREE", "two_series")
    orthanc.upload(dx_bytes(dicom_bytes, drr["pa"], "AP", three["study"], generate_uid(), patient_id="PACS-THREE"))
    status, detail = _refused(server, three["study"])
    assert status == 422 and "3 DX/CR radiographs" in detail, detail
    # a CT study
    ct_study, ct_series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        orthanc.upload(
            dicom_bytes(rng.integers(0, 255, (64, 64)).astype(np.uint8), "CT", bits=8, StudyInstanceUID=ct_study,
                        SeriesInstanceUID=ct_series, InstanceNumber=i, PixelSpacing=[1, 1],
                        ImageOrientationPatient=[1, 0, 0, 0, 1, 0], ImagePositionPatient=[0, 0, float(i)])  # fmt: skip
        )
    status, detail = _refused(server, ct_study)
    assert status == 422 and "a CT" in detail and "DX/CR" in detail, detail
    # an unknown UID, and something that is no UID
    status, detail = _refused(server, generate_uid())
    assert status == 404 and "no study or series" in detail, detail
    status, detail = _refused(server, "1.2.3; DROP")
    assert "not a DICOM UID" in detail, detail
    # still serving
    result = _infer(server, two_series["study"])
    assert result["study_instance_uid"] == two_series["study"]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_concurrent_requests_each_land_in_their_own_study(server, orthanc, dicom_bytes, drr):  # noqa: F811
    """20 studies, 20 simultaneous requests: each ends with 200 and its own study's CT (patient, study, sources), or a
    refusal (4xx/5xx with a message, never a result of another study); the server's RSS is sampled throughout."""
    studies = [upload_study(orthanc, dicom_bytes, drr, f"LOAD-{i:02d}", "two_series") for i in range(LOAD_REQUESTS)]
    proc = psutil.Process(server.proc.pid)
    baseline = _tree_rss(proc)
    peak, stop = [baseline], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(_tree_rss(proc))
            time.sleep(0.2)

    results: dict = {}

    def call(study):
        results[study["study"]] = server.post_infer(study["study"], timeout=900)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.monotonic()
    threads = [threading.Thread(target=call, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1200)
    seconds = time.monotonic() - start
    stop.set()
    sampler.join()
    assert len(results) == LOAD_REQUESTS, "a request was lost (no answer)"
    done = 0
    for study in studies:
        status, body = results[study["study"]]
        if status != 200:
            assert isinstance(body, dict) and body.get("detail"), (status, body)
            continue
        done += 1
        assert body["study_instance_uid"] == study["study"]
        assert set(body["source_sop_instance_uids"].values()) == set(study["sop"].values())
        series = _series_of(orthanc, study["study"])
        assert series.get(body["series_instance_uid"]) == "CT", series
        meta = _read_series(orthanc, study["study"], body["series_instance_uid"])
        assert len(meta) == 128 and {d.PatientID for d in meta} == {study["patient_id"]}
        assert {r.ReferencedSOPInstanceUID for r in meta[0].SourceImageSequence} == set(study["sop"].values())
    peak_mb, base_mb = max(peak) / 2**20, baseline / 2**20
    print(
        f"\nload: {LOAD_REQUESTS} concurrent requests, {done} reconstructed, {LOAD_REQUESTS - done} refused, "
        f"{seconds:.1f} s in all; server RSS {base_mb:.0f} MiB before, peak {peak_mb:.0f} MiB"
    )
    assert done == LOAD_REQUESTS, "MONAI Label serves requests one after the other: none should be refused"
    assert peak_mb < base_mb + 2048, f"server memory grew from {base_mb:.0f} to {peak_mb:.0f} MiB"
    # and the server still answers
    assert "perx2ct" in server.client.info()["models"]
