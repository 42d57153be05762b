"""``download_weights --url`` for a torchvision file name other than the registered one (newer torchvision's
``resnet101-63fe2227.pth``): the check uses the URL's own SHA-256 prefix (torchvision's naming convention, what
torch.hub checks) and the file keeps that name; and the model card's version is the bundle's."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from scripts.assets import pretrained as P

ROOT = Path(__file__).resolve().parents[1]


def _torchvision_named(folder: Path, content: bytes) -> Path:
    """A file named as torchvision names its weights: ``resnet101-<first 8 hex digits of its SHA-256>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"resnet101-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    path.write_bytes(content)
    return path


def test_url_with_its_own_torchvision_prefix_passes_through_the_cli(tmp_path):
    src = _torchvision_named(tmp_path / "src", b"re-saved resnet101 weights\n" * 50)
    out = tmp_path / "pretrained"
    cmd = [sys.executable, "-m", "scripts", "download_weights", "--name", "resnet101", "--output_dir", str(out)]
    res = subprocess.run(
        [*cmd, "--url", src.as_uri()], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert res.returncode == 0, res.stderr[-2000:]
    kept = out / src.name
    assert kept.read_bytes() == src.read_bytes() and res.stdout.strip().splitlines()[-1] == str(kept)
    assert not (out / P.WEIGHTS["resnet101"].filename).exists()  # not stored under the other file's name


def test_url_prefix_is_checked_and_other_urls_use_the_registered_hash(tmp_path):
    entry = P.WEIGHTS["resnet101"]
    v1 = P.entry_for_url(entry, P.RESNET101_V1_URL)
    assert (v1.filename, v1.hash_prefix) == ("resnet101-63fe2227.pth", "63fe2227")
    assert P.entry_for_url(entry, "file:///somewhere/copy.pth") is entry  # no torchvision name: registered check
    assert P.entry_for_url(entry, entry.urls[0]) is entry
    assert P.entry_for_url(P.WEIGHTS["lpips_lin"], "file:///x/vgg-12345678.pth") is P.WEIGHTS["lpips_lin"]  # full hash
    liar = tmp_path / "src" / "resnet101-63fe2227.pth"  # the name promises a prefix its content does not have
    liar.parent.mkdir()
    liar.write_bytes(b"not the weights")
    try:
        P.download_weights("resnet101", output_dir=tmp_path / "out", url=liar.as_uri())
    except P.WeightsDownloadError as e:
        assert "expected 63fe2227" in str(e)
    else:
        raise AssertionError("a file whose hash does not start with its name's prefix must be refused")
    assert not any((tmp_path / "out").iterdir())


def test_model_card_version_is_the_metadata_version():
    version = json.loads((ROOT / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
    card = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"\(version (\d+\.\d+\.\d+)\)", card)
    assert stated, "the model card's status line names the bundle version: '(version X.Y.Z)'"
    assert set(stated) == {version}, f"model card says {stated}, configs/metadata.json says {version}"
