"""The bundle's export and in/out checks, run exactly as documented (``python -m monai.bundle ...`` from
the repository root), on the ``small`` preset so that they fit a 2-core CPU.

* ``ckpt_export`` scripts the network (TorchScript); the exported module must reproduce the eager
  network's whole-volume output within 1e-4 and carry the bundle's metadata.
* ``verify_net_in_out`` builds ``torch.rand(1, 2, 128, 128)`` from ``configs/metadata.json`` and checks
  the output's channel count and dtype.

``bundle/tools/verify.py`` (tests/test_bundle_tools.py) runs the same checks in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
META = "configs/metadata.json"
CONFIG = "configs/inference.json"


def _bundle(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=600)


def _ckpt_export(ckpt: Path, ts_file: Path, *args: str) -> torch.jit.ScriptModule:
    """Run the documented ``ckpt_export`` command on ``ckpt``; the TorchScript module it writes to ``ts_file``."""
    res = _bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts_file),
        "--ckpt_file",
        str(ckpt),
        "--ckpt_path",  # the network follows this checkpoint's sidecar (ckpt_export keeps --ckpt_file to itself)
        str(ckpt),
        "--meta_file",
        META,
        "--config_file",
        CONFIG,
        *args,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.jit.load(str(ts_file))


@pytest.mark.slow
def test_ckpt_export_matches_the_eager_network(tmp_path, small_network):
    net = small_network().eval()
    ckpt, ts_file = tmp_path / "model.pt", tmp_path / "model.ts"
    torch.save(net.state_dict(), ckpt)
    scripted = _ckpt_export(ckpt, ts_file, "--model_preset", "small").eval()
    assert sum(p.numel() for p in scripted.parameters()) == sum(p.numel() for p in net.parameters())
    image = torch.rand(1, 2, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = net(image)
        exported = scripted(image)
        # the training path (several slices per case, zoom boxes) is exported too
        axis, index = torch.tensor([[0, 1, 2]]), torch.tensor([[3.0, 64.5, 127.0]])
        box = torch.tensor([[[0.0, 0.0, 128.0], [10.0, 20.0, 32.0], [64.0, 0.0, 64.0]]])
        torch.testing.assert_close(scripted(image, axis, index, box), net(image, axis, index, box), rtol=0, atol=1e-4)
    assert eager.shape == exported.shape == (1, 1, 128, 128, 128)
    assert float((eager - exported).abs().max()) <= 1e-4
    with zipfile.ZipFile(ts_file) as zf:  # the bundle's metadata travels inside the TorchScript file
        meta = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("metadata.json"))))
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 2


@pytest.mark.slow
def test_verify_net_in_out_passes():
    res = _bundle(
        "verify_net_in_out", "network_def", "--meta_file", META, "--config_file", CONFIG, "--model_preset", "small"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "data shape of network is verified with no error" in (res.stdout + res.stderr)


@pytest.mark.slow
def test_ckpt_export_of_the_default_paper_preset(tmp_path):
    """The configs' default (``paper``) scripts too; no forward pass here (minutes on a CPU)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / CONFIG))
    ckpt, ts_file = tmp_path / "model.pt", tmp_path / "model.ts"
    parser["ckpt_path"] = str(ckpt)  # no sidecar: the configs' default preset
    assert parser.get_parsed_content("network_info")["model_preset"] == "paper"
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), ckpt)
    scripted = _ckpt_export(ckpt, ts_file)
    state = scripted.state_dict()
    assert sum(p.numel() for p in scripted.parameters()) == sum(p.numel() for p in net.parameters())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
