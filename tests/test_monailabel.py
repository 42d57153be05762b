"""MONAI Label integration: a real server serving a small checkpoint reconstructs a study made from the
example CT (LIDC-IDRI-0001) with the bundle's own DRR transforms.

The server is started exactly as ``docs/monailabel.md`` says (``python -m bundle.monailabel_app
start_server ...``, MONAI Label's CLI behind the pydicom-3 shim) on 127.0.0.1 and a free port, and is
stopped by terminating its process group. Time limits: 120 s to start, 60 s per request; the server
log is printed on any failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "bundle" / "monailabel_app"
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
STUDY_ID = "LIDC-IDRI-0001"


def _small_checkpoint(path: Path) -> Path:
    """State dict of ``network_def`` with ``model_preset small``, built from ``configs/inference.json``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO)
    parser["model_preset"] = "small"
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params <= 5_000_000, f"small preset has {n_params} parameters"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    return _small_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def study(tmp_path_factory, example_raw_dir) -> dict:
    """``STUDIES/LIDC-IDRI-0001.nii.gz`` from 8-bit PNG DRRs of the example CT (the prepare protocol)."""
    from monai.transforms import Compose
    from PIL import Image

    from bundle.monailabel_app.lib.study import make_study, read_study
    from scripts.transforms import DRRd, LoadCTd, NormalizeCTd

    ct_dir = example_raw_dir / STUDY_ID
    d = Compose([LoadCTd(keys="ct"), NormalizeCTd(keys="ct"), DRRd(keys="ct")])({"ct": str(ct_dir)})
    root = tmp_path_factory.mktemp("monailabel")
    pngs = {}
    for view in ("pa", "lateral"):
        img = d[view][0].numpy()  # (rows, cols) in [0, 1], already 8-bit levels
        pngs[view] = root / f"{view}.png"
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(pngs[view])
    studies = root / "studies"
    make_study(str(pngs["pa"]), str(pngs["lateral"]), str(studies / f"{STUDY_ID}.nii.gz"))
    frames = read_study(studies / f"{STUDY_ID}.nii.gz")
    with Image.open(pngs["pa"]) as im:  # the study holds the PNG's pixels, in MONAI's (W, H) order
        np.testing.assert_array_equal(frames["pa"], np.asarray(im).T)
    return {"studies": studies, "root": root}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path, start_s: float) -> None:
        self.proc, self.url, self.log, self.start_s = proc, url, log, start_s

    def log_tail(self, n: int = 80) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def fail(self, message: str):
        pytest.fail(f"{message}\n--- MONAI Label server log ({self.log}) ---\n{self.log_tail()}", pytrace=False)

    def request(self, method: str, path: str, form: dict | None = None) -> bytes:
        data = urllib.parse.urlencode(form).encode() if form is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            self.fail(f"{method} {path} -> HTTP {e.code}: {e.read()[:2000]!r}")
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            self.fail(f"{method} {path} failed: {e}")


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
        "--conf", "model_preset", "small",
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2",
               MONAI_LABEL_SESSION_PATH=str(study["root"] / "sessions"), MONAI_LABEL_DATASTORE_AUTO_RELOAD="false")  # fmt: skip
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


def test_info_and_datastore(server):
    info = json.loads(server.request("GET", "/info/"))
    model = info["models"].get("perx2ct")
    if model is None:
        server.fail(f"model perx2ct not served; /info/ models: {list(info['models'])}")
    assert model["model_preset"] == "small"
    listed = json.loads(server.request("GET", "/datastore/?output=all"))
    assert STUDY_ID in listed["objects"], f"study not listed by the datastore: {list(listed['objects'])}"


def _reconstruct(server, tmp_path: Path, name: str, params: dict | None = None):
    """POST /infer/perx2ct for the study; returns (nibabel image, array, seconds)."""
    start = time.monotonic()
    body = server.request(
        "POST", f"/infer/perx2ct?image={STUDY_ID}&output=image", form={"params": json.dumps(params)} if params else None
    )
    seconds = time.monotonic() - start
    out = tmp_path / f"{name}.nii.gz"
    out.write_bytes(body)
    try:
        img = nib.load(str(out))
        vol = np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001
        server.fail(f"the response is not a NIfTI volume ({len(body)} bytes): {e}")
    return img, vol, seconds


def _check_volume(img, vol, iso_lps):
    from scripts.inference import reconstruction_affine

    assert vol.shape == (128, 128, 128)
    assert np.isfinite(vol).all()
    assert -1024.0 - 1e-3 <= vol.min() and vol.max() <= 1476.0 + 1e-3, "HU range of the [0, 1] target scale"
    np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), [2.5, 2.5, 2.5], atol=1e-5)
    np.testing.assert_allclose(img.affine, reconstruction_affine(iso_lps), atol=1e-4)
    centre_ras = img.affine @ np.array([63.5, 63.5, 63.5, 1.0])
    np.testing.assert_allclose(centre_ras[:3], [-iso_lps[0], -iso_lps[1], iso_lps[2]], atol=1e-3)


def test_reconstruct_study(server, tmp_path):
    """Default: the isocentre of a pair of radiographs is unknown and taken as the origin. (A request
    with ``params={"isocentre_mm": ...}`` goes the same way into the bundle's writer; one inference of
    the small network takes about 20 s on 2 CPU cores, so only one request is made here.)"""
    img, vol, seconds = _reconstruct(server, tmp_path, "default")
    print(f"\ninference (request to response): {seconds:.2f} s")
    _check_volume(img, vol, (0.0, 0.0, 0.0))
    assert float(vol.std()) > 0, "constant reconstruction"
