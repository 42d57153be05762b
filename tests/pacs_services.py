"""Real PACS-side services for the tests: Orthanc (with its DICOMweb plugin) and the MONAI Label server with this app.

Both run as child processes on 127.0.0.1 and a free port, each with its own temporary folders, and are stopped
(process group terminated, then killed) when the fixture ends. Nothing is mocked.

* :func:`start_orthanc` / :class:`Orthanc`: Debian's ``Orthanc`` binary (package ``orthanc``) and DICOMweb plugin
  (package ``orthanc-dicomweb``, ``libOrthancDicomWeb.so`` found through ``dpkg -L``), a generated JSON configuration
  (own storage and index folder, DICOM network server off, DICOMweb on at ``/dicom-web/``). Ready when
  ``/dicom-web/studies`` answers. ``Orthanc.upload(bytes)`` stores a DICOM file through Orthanc's REST API
  (``POST /instances``); ``Orthanc.dicomweb`` is the DICOMweb root the app is started with.
* :func:`start_monailabel` / :class:`MonaiLabel`: ``python -m bundle.monailabel_app start_server --app
  bundle/monailabel_app --studies STUDIES --conf models perx2ct ...`` exactly as ``docs/monailabel.md`` says, plus
  the test's checkpoint. Ready when ``/info/`` answers. The process is started *offline*: ``HTTP(S)_PROXY`` point at
  a closed local port and ``NO_PROXY`` lets only 127.0.0.1/localhost through, so any download at start-up (MONAI
  Label 0.8.5 fetches dcmqi from GitHub for a DICOMweb datastore) fails as it would without internet.
* Fixtures (module scope; import them into a test module): ``orthanc`` and ``pacs_ckpt``.

If the Debian binaries are absent the test is skipped (locally) or fails (``CI=true``) with the install command;
``.ci/run`` installs them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "bundle" / "monailabel_app"
ORTHANC_START_TIMEOUT_S = 60
MONAILABEL_START_TIMEOUT_S = 180
INSTALL = "apt-get install -y orthanc orthanc-dicomweb"
#: a proxy nobody listens on: downloads from outside 127.0.0.1 fail at once, as offline
OFFLINE_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never through a proxy
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the process group started with ``start_new_session``; kill it after 20 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(log: Path, n: int = 60) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-n:])


def orthanc_binaries() -> tuple[str, str] | None:
    """``(Orthanc executable, DICOMweb plugin .so)`` from the Debian packages, or None when not installed."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)
    if exe is None:
        return None
    try:
        files = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    plugins = [f for f in files.splitlines() if f.endswith(".so") and "DicomWeb" in Path(f).name]
    plugins.sort(key=lambda f: (not f.startswith("/usr/share/orthanc/plugins"), f))  # the packaged plugin folder
    return (exe, plugins[0]) if plugins else None


class Orthanc:
    """A running Orthanc: ``url`` (REST root), ``dicomweb`` (DICOMweb root), ``folder`` (storage, index, log)."""

    def __init__(self, proc: subprocess.Popen, port: int, folder: Path) -> None:
        self.proc, self.port, self.folder = proc, port, folder
        self.url = f"http://127.0.0.1:{port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.log = folder / "orthanc.log"

    def upload(self, dicom: bytes) -> dict:
        """Store one DICOM Part 10 file (``POST /instances``); returns Orthanc's answer (``ID``, ``Status``)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(
            self.url + "/instances", data=dicom, method="POST", headers={"Content-Type": "application/dicom"}
        )
        with opener.open(req, timeout=30) as r:
            return json.loads(r.read())

    def get_json(self, path: str):
        status, body = _get(self.url + path, timeout=30)
        if status != 200:
            raise RuntimeError(f"Orthanc GET {path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def stop(self) -> None:
        _stop(self.proc)


def start_orthanc(folder: Path) -> Orthanc:
    """Start Orthanc on 127.0.0.1 with storage in ``folder``; returns once DICOMweb answers (skips if absent)."""
    found = orthanc_binaries()
    if found is None:
        from conftest import missing  # the suite's skip-locally / fail-in-CI rule

        missing(f"Orthanc with its DICOMweb plugin is not installed (Debian: {INSTALL})")
    exe, plugin = found
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "PerX2CT-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # 127.0.0.1 only
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,  # DICOMweb and REST only: no DIMSE port to collide with
        "HttpThreadsCount": 20,
        "StableAge": 1,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with open(log, "w") as fp:
        proc = subprocess.Popen(
            [exe, str(folder / "orthanc.json")], stdout=fp, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Orthanc(proc, port, folder)
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {proc.returncode}:\n{_tail(log)}")
        try:
            if _get(server.dicomweb + "/studies")[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() - start > ORTHANC_START_TIMEOUT_S:
            server.stop()
            raise RuntimeError(f"Orthanc did not answer within {ORTHANC_START_TIMEOUT_S} s:\n{_tail(log)}")
        time.sleep(0.3)


class MonaiLabel:
    """A running MONAI Label server with this app: ``url``, ``log``, ``client`` (MONAI Label's ``MONAILabelClient``)."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path, start_s: float) -> None:
        from monailabel.client import MONAILabelClient

        self.proc, self.url, self.log, self.start_s = proc, url, log, start_s
        self.client = MONAILabelClient(url, tmpdir=str(log.parent / "client"))

    def log_tail(self, n: int = 80) -> str:
        return _tail(self.log, n)

    def fail(self, message: str):
        pytest.fail(f"{message}\n--- MONAI Label server log ({self.log}) ---\n{self.log_tail()}", pytrace=False)

    def post_infer(self, image: str, params: dict | None = None, timeout: float = 300) -> tuple[int, dict | bytes]:
        """``POST /infer/perx2ct?image=<id>`` as plain HTTP; returns (status, parsed JSON or raw body)."""
        import urllib.parse

        body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
        req = urllib.request.Request(
            f"{self.url}/infer/perx2ct?image={urllib.parse.quote(image)}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
        if "json" in ctype:
            return status, json.loads(raw)
        return status, raw

    def stop(self) -> None:
        _stop(self.proc)


def start_monailabel(
    studies: str, ckpt: Path, folder: Path, extra_conf: dict | None = None, env: dict | None = None
) -> MonaiLabel:
    """Start the app's server on 127.0.0.1 (offline, see module doc); returns once ``/info/`` answers.

    Args:
        studies: the ``--studies`` value (a folder or a DICOMweb root such as ``Orthanc.dicomweb``).
        ckpt: the checkpoint (``--conf ckpt_path``).
        folder: where the log, sessions and the DICOMweb cache go.
        extra_conf: more ``--conf`` pairs.
        env: more environment variables.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "server.log"
    cmd = [
        sys.executable, "-m", "bundle.monailabel_app", "start_server",
        "--app", str(APP), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "models", "perx2ct",
        "--conf", "bundle_path", str(REPO),
        "--conf", "ckpt_path", str(ckpt),
    ]  # fmt: skip
    for k, v in (extra_conf or {}).items():
        cmd += ["--conf", k, str(v)]
    full_env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="2",
        MONAI_LABEL_DATASTORE_AUTO_RELOAD="false",
        MONAI_LABEL_SESSION_PATH=str(folder / "sessions"),
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(folder / "dicomweb-cache"),
        **OFFLINE_ENV,
    )
    full_env.update(env or {})
    start = time.monotonic()
    with open(log, "w") as fp:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=fp, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"MONAI Label exited with status {proc.returncode}: {' '.join(cmd)}\n{_tail(log)}")
        try:
            if _get(url + "/info/")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() - start > MONAILABEL_START_TIMEOUT_S:
            _stop(proc)
            raise RuntimeError(f"MONAI Label did not answer /info/ within {MONAILABEL_START_TIMEOUT_S} s\n{_tail(log)}")
        time.sleep(1.0)
    return MonaiLabel(proc, url, log, time.monotonic() - start)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A fresh Orthanc for the module (own storage), stopped afterwards."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pacs_ckpt(tmp_path_factory, small_checkpoint) -> Path:
    """The seeded ``small`` network's checkpoint (as ``tests/test_monailabel.py`` serves)."""
    return small_checkpoint(tmp_path_factory.mktemp("pacs_ckpt") / "model.pt")


# ------------------------------------------------------------------------------------------- test studies
DETECTOR_MM = 500.0  # the perx2ct geometry's detector side: the 128 px of the DRRs cover it


def drr_pixels(example_raw_dir: Path, out: Path, case: str = "LIDC-IDRI-0001") -> dict:
    """8-bit PA and lateral DRRs of an example CT (the bundle's own DRR transforms), as ``tests/test_monailabel.py``
    makes them: ``{"pa": (128, 128) uint8, "lateral": ..., "png": {"pa": path, "lateral": path}}`` (rows, columns),
    stretched to a maximum of 255 so a DICOM copy and the PNG reach the network as the same input."""
    from monai.transforms import Compose
    from PIL import Image
    from scripts.transforms.ct import LoadCTd, NormalizeCTd
    from scripts.transforms.drr import DRRd

    d = Compose([LoadCTd(keys="ct"), NormalizeCTd(keys="ct"), DRRd(keys="ct")])({"ct": str(example_raw_dir / case)})
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"png": {}}
    for view in ("pa", "lateral"):
        img = d[view][0].numpy()
        result[view] = np.round(img / img.max() * 255).astype(np.uint8)
        result["png"][view] = out / f"{view}.png"
        Image.fromarray(result[view]).save(result["png"][view])
    return result


def dx_bytes(dicom_bytes, pixels, view_position: str | None, study_uid: str, series_uid: str, instance: int = 1,
             patient_id: str = "PERX2CT-TEST", modality: str = "DX", **extra) -> bytes:  # fmt: skip
    """One DX (or CR) radiograph as DICOM Part 10 bytes (conftest ``dicom_bytes``), ImagerPixelSpacing covering the
    500 mm detector; ``view_position`` None leaves ViewPosition out."""
    spacing = DETECTOR_MM / pixels.shape[0]
    attributes = dict(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SeriesNumber=1, InstanceNumber=instance,
                      ImagerPixelSpacing=[spacing, spacing], PatientID=patient_id, PatientName=f"Test^{patient_id}",
                      StudyDate="20260101", StudyTime="120000", AccessionNumber=patient_id[-16:])  # fmt: skip
    if view_position is not None:
        attributes["ViewPosition"] = view_position
    attributes.update(extra)
    return dicom_bytes(pixels, modality, bits=8, **attributes)


def upload_study(orthanc: Orthanc, dicom_bytes, pixels: dict, patient_id: str, layout: str = "two_series") -> dict:
    """Store a PA + lateral DX study in Orthanc; returns its UIDs ``{"study", "series": {"pa", "lateral"}, "sop"}``.

    ``layout``: ``"two_series"`` (PA and lateral in their own series, the usual export) or ``"one_series"`` (both in
    one series, the lateral first).
    """
    import pydicom
    from pydicom.uid import generate_uid

    study = generate_uid()
    if layout == "two_series":
        series = {"pa": generate_uid(), "lateral": generate_uid()}
        order = [("pa", "PA", 1), ("lateral", "LL", 1)]
    elif layout == "one_series":
        one = generate_uid()
        series = {"pa": one, "lateral": one}
        order = [("lateral", "LL", 1), ("pa", "PA", 2)]
    else:
        raise ValueError(layout)
    sop = {}
    for view, vp, instance in order:
        data = dx_bytes(dicom_bytes, pixels[view], vp, study, series[view], instance, patient_id)
        sop[view] = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        orthanc.upload(data)
    return {"study": study, "series": series, "sop": sop, "patient_id": patient_id}
