"""Bundle tooling: ``python -m bundle verify`` (Model Zoo checks) and ``python -m bundle package``
(the archive ``monai.bundle download`` / ``load`` consume), both on the real repository."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from bundle.tools import verify as bv
from bundle.tools.package import package

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "bundle" / "tools" / "schemas" / "meta_schema_20240725.json"


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, small_checkpoint) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture()
def bundle_copy(tmp_path) -> Path:
    """A throw-away copy of the bundle files (configs, scripts, docs, LICENSE, large_files.yml)."""
    dst = tmp_path / "perx2ct"
    for name in ("configs", "scripts", "docs"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("LICENSE", "large_files.yml"):
        shutil.copy2(REPO / name, dst / name)
    return dst


def _schema_args() -> dict:
    if not SCHEMA.is_file():
        from conftest import missing

        missing(f"metadata schema copy not found at {SCHEMA} (bundle/tools/schemas)")
    return {"schema": str(SCHEMA)}


@pytest.mark.slow
def test_verify_passes_on_repo():
    """The command as documented: every check passes (WARN allowed), exit status 0."""
    _schema_args()
    proc = subprocess.run(
        [sys.executable, "-m", "bundle", "verify", "--schema", str(SCHEMA)],
        cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=600,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln[:4] in ("PASS", "FAIL", "WARN")]
    assert proc.returncode == 0, f"verify failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert {ln.split()[1] for ln in lines} == set(bv.CHECKS), proc.stdout
    assert not [ln for ln in lines if ln.startswith("FAIL")]
    assert "0 failed" in proc.stdout


def test_verify_changelog_without_version_fails(bundle_copy):
    meta_path = bundle_copy / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["changelog"].pop(meta["version"])
    meta_path.write_text(json.dumps(meta, indent=2))
    (result,) = bv.run_checks(bundle_copy, ["changelog"])
    assert result.status == "FAIL"
    assert f"version {meta['version']} is not a key of 'changelog'" in result.message


def test_verify_reports_missing_files_sections_and_fields(bundle_copy):
    (bundle_copy / "docs" / "data_license.txt").unlink()
    readme = bundle_copy / "docs" / "README.md"
    readme.write_text("\n".join(ln for ln in readme.read_text().splitlines() if "limitations" not in ln.lower()))
    (bundle_copy / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n    url: https://example.org/m.pt\n"
    )
    results = {
        r.name: r
        for r in bv.run_checks(bundle_copy, ["required_files", "readme_sections", "large_files"], **_schema_args())
    }
    assert results["required_files"].status == "FAIL" and "docs/data_license.txt" in results["required_files"].message
    assert results["readme_sections"].status == "FAIL" and "Limitations" in results["readme_sections"].message
    assert results["large_files"].status == "FAIL" and "hash_val, hash_type" in results["large_files"].message


def test_verify_schema_violation_fails(bundle_copy):
    meta_path = bundle_copy / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["network_data_format"]
    meta_path.write_text(json.dumps(meta))
    (result,) = bv.run_checks(bundle_copy, ["metadata_schema"], **_schema_args())
    assert result.status == "FAIL" and "network_data_format" in result.message


@pytest.mark.slow
def test_verify_cli_exit_status(bundle_copy):
    meta_path = bundle_copy / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "99.0.0"
    meta_path.write_text(json.dumps(meta))
    proc = subprocess.run(
        [sys.executable, "-m", "bundle", "verify", "--bundle_root", str(bundle_copy),
         "--only", "required_files,changelog"],
        cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  changelog" in proc.stdout and "version 99.0.0 is not a key" in proc.stdout


@pytest.mark.slow
def test_package_loads_back_with_monai_bundle(tmp_path, small_ckpt):
    archive = Path(package(output=str(tmp_path / "dist"), bundle_root=str(REPO), ckpt_file=str(small_ckpt)))
    version = json.loads((REPO / "configs" / "metadata.json").read_text())["version"]
    assert archive.name == f"perx2ct_{version}.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert all(n.startswith("perx2ct/") for n in names)
    # folders 0755 (models/ included: a non-root user can put model.pt there), files 0644
    assert modes["perx2ct/models/"] == stat.S_IFDIR | 0o755 and modes["perx2ct/configs/"] == stat.S_IFDIR | 0o755
    assert {m for n, m in modes.items() if not n.endswith("/")} == {stat.S_IFREG | 0o644}
    assert {m for n, m in modes.items() if n.endswith("/")} == {stat.S_IFDIR | 0o755}
    assert "perx2ct/models/model.json" in names, "the checkpoint's sidecar travels with it"
    for required in ("configs/metadata.json", "configs/inference.json", "scripts/__init__.py", "docs/README.md",
                     "LICENSE", "large_files.yml", "models/model.pt"):  # fmt: skip
        assert f"perx2ct/{required}" in names, f"{required} missing from {archive.name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.split("/")[1] in ("tests", "data", "bundle", "runs", "eval", ".git")]

    # download (file:// URL, offline) + load into a fresh interpreter that cannot see the repository
    bundle_dir = tmp_path / "hub"
    script = textwrap.dedent(f"""
        import json, sys, torch
        from monai.bundle import download, load
        download(name="perx2ct", url={archive.resolve().as_uri()!r}, bundle_dir={str(bundle_dir)!r})
        sys.path.insert(0, {str(bundle_dir / "perx2ct")!r})  # the bundle's own `scripts` package
        # no preset flag and no bundle_root, from another working directory: the network is the one the packaged
        # models/model.json names (small), found through the bundle's own package (scripts.utils.bundle_paths)
        net = load(name="perx2ct", bundle_dir={str(bundle_dir)!r}, source="github", workflow_type="inference",
                   device="cpu")
        import scripts
        assert scripts.__file__.startswith({str(bundle_dir)!r}), scripts.__file__
        ref = torch.load({str(small_ckpt)!r}, weights_only=True)
        got = net.state_dict()
        assert set(got) == set(ref), "state dict keys differ"
        assert all(torch.equal(got[k], ref[k]) for k in ref), "weights differ"
        print("LOADED", type(net).__name__)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert proc.returncode == 0 and "LOADED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_package_url_writes_large_files(tmp_path, bundle_copy, small_ckpt):
    """``package --url`` writes the large_files.yml entry (the checkpoint's sha256) that the zoo downloads,
    ships that file in the archive, and verify's large_files check accepts it; no URL, no placeholder."""
    assert "large_files: []" in (REPO / "large_files.yml").read_text(), "nothing published: an empty list"
    url = "https://github.com/example/perx2ct/releases/download/v0.2.0/model.pt"
    archive = package(output=str(tmp_path / "dist"), bundle_root=str(bundle_copy), ckpt_file=str(small_ckpt), url=url)
    from monai.bundle import ConfigParser

    entries = ConfigParser.load_config_file(str(bundle_copy / "large_files.yml"))["large_files"]
    digest = hashlib.sha256(small_ckpt.read_bytes()).hexdigest()
    assert entries == [{"path": "models/model.pt", "url": url, "hash_val": digest, "hash_type": "sha256"}]
    with zipfile.ZipFile(archive) as zf:
        assert zf.read("perx2ct/large_files.yml") == (bundle_copy / "large_files.yml").read_bytes()
    (result,) = bv.run_checks(bundle_copy, ["large_files"])
    assert result.status == "PASS", result.message
    with pytest.raises(ValueError, match="is not the address of a file"):
        package(output=str(tmp_path / "dist"), bundle_root=str(bundle_copy), ckpt_file=str(small_ckpt), url="ftp://x/y")


def test_verify_large_files_refuses_an_empty_hash(bundle_copy):
    (bundle_copy / "large_files.yml").write_text(
        'large_files:\n  - path: "models/model.pt"\n    url: "https://example.org/m.pt"\n    hash_val: ""\n'
        '    hash_type: "sha256"\n'
    )
    (result,) = bv.run_checks(bundle_copy, ["large_files"])
    assert result.status == "FAIL" and "empty hash_val" in result.message and "--url" in result.message
