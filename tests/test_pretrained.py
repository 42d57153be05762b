"""download_weights: verified downloads from local file:// URLs only (nothing is fetched from the internet here):
skip on rerun, hash mismatch naming both hashes, atomic replacement, a clear message without network, the lpips
wheel member extracted and checked against its real SHA-256."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from scripts.assets import pretrained as P
from scripts.assets.hashing import sha256_file

ROOT = Path(__file__).resolve().parents[1]
LIN_FILE = ROOT / "tests" / "data" / "lpips" / "lpips_vgg_v0.1.pth"
UNREACHABLE = "http://127.0.0.1:9/weights.pth"  # discard port: connection refused at once


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A registered entry whose URL is a local file with a known hash (full SHA-256 and torchvision-style prefix)."""
    src = tmp_path / "src" / "tiny-weights.bin"
    src.parent.mkdir()
    src.write_bytes(b"pretend these are weights\n" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    full = P.WeightFile("fake", "tiny.pth", (src.as_uri(),), "test file", "none", sha256=digest)
    prefix = P.WeightFile(
        "fake_prefix", f"tiny-{digest[:8]}.pth", (src.as_uri(),), "test file", "none", hash_prefix=digest[:8]
    )
    monkeypatch.setitem(P.WEIGHTS, "fake", full)
    monkeypatch.setitem(P.WEIGHTS, "fake_prefix", prefix)
    return src, digest, tmp_path / "out"


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_download_verify_and_skip_on_rerun(fake, monkeypatch):
    src, digest, out = fake
    paths = P.download_weights("fake,fake_prefix", output_dir=out)
    assert [p.name for p in paths] == ["tiny.pth", f"tiny-{digest[:8]}.pth"]
    assert all(p.read_bytes() == src.read_bytes() for p in paths)
    assert _leftovers(out) == []
    assert P.find_weights("fake", out) == str(out / "tiny.pth") and P.find_weights("fake", out / "none") is None

    def no_fetch(*a, **k):
        raise AssertionError("a verified file must not be downloaded again")

    monkeypatch.setattr(P, "_copy_url", no_fetch)
    assert P.download_weights("fake", output_dir=out) == [out / "tiny.pth"]


def test_corrupt_file_is_replaced(fake):
    src, digest, out = fake
    out.mkdir()
    (out / "tiny.pth").write_bytes(b"truncated")
    P.download_weights("fake", output_dir=out)
    assert sha256_file(out / "tiny.pth") == digest


def test_mismatch_names_both_hashes_and_keeps_nothing(fake, tmp_path):
    src, digest, out = fake
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    got = hashlib.sha256(b"something else").hexdigest()
    for name, expected in (("fake", digest), ("fake_prefix", digest[:8])):
        with pytest.raises(P.WeightsDownloadError) as e:
            P.download_weights(name, output_dir=out, url=other.as_uri())
        assert got in str(e.value) and expected in str(e.value)
        assert not (out / P.WEIGHTS[name].filename).exists()
        assert _leftovers(out) == []


def test_no_network_message(fake):
    _, _, out = fake
    with pytest.raises(P.WeightsDownloadError) as e:
        P.download_weights("fake", output_dir=out, url=UNREACHABLE)
    msg = str(e.value)
    assert UNREACHABLE in msg and "Without internet" in msg and str(out / "tiny.pth") in msg and "file:///" in msg
    assert list(out.iterdir()) == []
    with pytest.raises(P.WeightsDownloadError, match="unknown weights"):
        P.download_weights("resnet50", output_dir=out)
    with pytest.raises(P.WeightsDownloadError, match="one file"):
        P.download_weights("all", output_dir=out, url=UNREACHABLE)


def test_interrupted_download_leaves_no_file(fake, monkeypatch):
    """Ctrl-C in the middle of a download: neither the final file nor the temporary one remains, and an
    existing verified file is never touched by a failed re-download (force)."""
    src, digest, out = fake

    def partial_then_interrupt(url, dest):
        dest.write_bytes(b"half")
        raise KeyboardInterrupt

    real_copy = P._copy_url
    monkeypatch.setattr(P, "_copy_url", partial_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        P.download_weights("fake", output_dir=out)
    assert list(out.iterdir()) == []
    monkeypatch.setattr(P, "_copy_url", real_copy)
    P.download_weights("fake", output_dir=out)
    monkeypatch.setattr(P, "_copy_url", partial_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        P.download_weights("fake", output_dir=out, force=True)
    assert sha256_file(out / "tiny.pth") == digest and _leftovers(out) == []


def test_lpips_lin_from_a_wheel_or_the_bare_file(tmp_path):
    """The registered lpips_lin entry: the member of a wheel (zip) is extracted and checked with the real hash."""
    wheel = tmp_path / "lpips-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("lpips/__init__.py", "")
        zf.write(LIN_FILE, "lpips/weights/v0.1/vgg.pth")
        zf.writestr("lpips/weights/v0.0/vgg.pth", b"old version")
    out = tmp_path / "out"
    (path,) = P.download_weights("lpips_lin", output_dir=out, url=wheel.as_uri())
    assert path == out / "lpips_vgg_v0.1.pth" and sha256_file(path) == P.WEIGHTS["lpips_lin"].sha256
    assert sorted(p.name for p in out.iterdir()) == ["lpips_vgg_v0.1.pth"]
    (path,) = P.download_weights("lpips_lin", output_dir=tmp_path / "out2", url=LIN_FILE.as_uri())
    assert P.verify(path, P.WEIGHTS["lpips_lin"])
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("lpips/weights/v0.0/vgg.pth", b"old version")
    with pytest.raises(P.WeightsDownloadError, match="no member lpips/weights/v0.1/vgg.pth"):
        P.download_weights("lpips_lin", output_dir=tmp_path / "out3", url=bad.as_uri())


def test_registry_entries():
    """The recipe's files, their sources and checks (torchvision publishes 8-digit prefixes only)."""
    assert P.DEFAULT_NAMES == ("resnet101", "vgg16", "lpips_lin")
    r, v, lin = (P.WEIGHTS[n] for n in P.DEFAULT_NAMES)
    assert r.filename == "resnet101-5d3b4d8f.pth" and r.hash_prefix == "5d3b4d8f" and r.sha256 is None
    assert v.filename == "vgg16-397923af.pth" and v.hash_prefix == "397923af"
    assert all(u.startswith("https://download.pytorch.org/models/") for u in r.urls + v.urls)
    assert lin.sha256 == "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
    assert lin.urls[0].startswith("https://files.pythonhosted.org/") and lin.member == "lpips/weights/v0.1/vgg.pth"
    assert sha256_file(LIN_FILE) == lin.sha256


@pytest.mark.slow
def test_cli(tmp_path):
    """The documented command: a failure prints one error line (no traceback) and exits 1."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    out = tmp_path / "pretrained"
    P.download_weights("lpips_lin", output_dir=out, url=LIN_FILE.as_uri())
    cmd = [sys.executable, "-m", "scripts", "download_weights", "--name", "lpips_lin", "--output_dir", str(out)]
    bad = subprocess.run(
        [*cmd, "--url", UNREACHABLE, "--force"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: could not download lpips_lin")
    assert "Traceback" not in bad.stderr
    assert P.verify(out / "lpips_vgg_v0.1.pth", P.WEIGHTS["lpips_lin"])  # a failed retry keeps the good file
