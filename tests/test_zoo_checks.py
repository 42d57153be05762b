"""The Model Zoo's CI steps (``python -m bundle zoo_check``) on the packaged bundle, with a checkpoint made by
the quick training, and the format gate (``python -m bundle lint``) on a small throw-away project.

The PyPI step (``requirements_py310``: metadata-only ``pip install --dry-run`` for Python 3.10 and 3.11)
runs when pypi.org answers and is asserted ``SKIP`` otherwise; everything else runs offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the zoo checks package, unpack and export the bundle; the lint gate runs processes

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "bundle" / "tools" / "schemas" / "meta_schema_20240725.json"


def _run(cmd: list[str], cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env
    )


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def quick_ckpt(quick_run) -> dict:
    """``models/model.pt`` (+ sidecar) of the documented quick training (the session's ``quick_run``)."""
    ckpt = quick_run["out"] / "models" / "model.pt"
    assert ckpt.is_file(), sorted(p.name for p in (quick_run["out"] / "models").iterdir())
    return {"ckpt": ckpt, "raw": quick_run["raw"], "cache": quick_run["out"].parent / "cache"}


def test_zoo_check_on_the_packaged_bundle_with_a_trained_checkpoint(quick_ckpt):
    """Every step of the zoo's ``verify_bundle.py`` (full mode) passes on the archive unpacked as
    ``models/perx2ct``: the checkpoint is fetched from its ``large_files.yml`` URL (file://) and hash-checked,
    the properties of inference, train and eval hold, and TorchScript export holds the trained weights."""
    if not SCHEMA.is_file():
        from conftest import missing

        missing(f"metadata schema copy not found at {SCHEMA} (bundle/tools/schemas)")
    online = _pypi_reachable()
    ckpt = quick_ckpt["ckpt"]
    cmd = [sys.executable, "-m", "bundle", "zoo_check", "--ckpt_file", str(ckpt), "--url", ckpt.as_uri(),
           "--schema", str(SCHEMA), "--dataset_dir", str(quick_ckpt["raw"]),
           "--cache_dir", str(quick_ckpt["cache"])]  # fmt: skip
    if not online:
        cmd.append("--offline")
    res = _run(cmd)
    lines = {ln.split()[1]: ln for ln in res.stdout.splitlines() if ln[:4] in ("PASS", "FAIL", "WARN", "SKIP")}
    assert res.returncode == 0, f"zoo_check failed:\n{res.stdout}\n{res.stderr[-4000:]}"
    from bundle.tools.zoo_checks import STEPS

    assert set(lines) == set(STEPS), res.stdout
    expected_skip = set() if online else {"requirements_py310"}
    for name, line in lines.items():
        want = "SKIP" if name in expected_skip else "PASS"
        if name == "python310_syntax" and line.startswith("WARN"):
            continue  # no Python 3.10 interpreter on this machine: only the feature scan ran
        assert line.startswith(want), line
    assert "1 file(s) downloaded and hash-checked" in lines["download_large_files"]
    assert "inference, train, eval" in lines["verify_bundle_properties"]
    assert "tensors equal the checkpoint's" in lines["verify_torchscript"]


def test_zoo_check_catches_a_wrong_hash(tmp_path, quick_ckpt):
    """The download step really checks: a large_files.yml hash that is not the file's fails, naming the file."""
    from bundle.tools.zoo_checks import ZooContext, step_download_large_files, step_package

    ctx = ZooContext(tmp_path, ckpt_file=str(quick_ckpt["ckpt"]), url=quick_ckpt["ckpt"].as_uri())
    step_package(ctx)
    yml = ctx.zoo_bundle / "large_files.yml"
    digest = hashlib.sha256(quick_ckpt["ckpt"].read_bytes()).hexdigest()
    assert digest in yml.read_text()
    yml.write_text(yml.read_text().replace(digest, "0" * 64))
    from bundle.tools.checks import CheckError

    with pytest.raises(CheckError, match="Download large files in models/perx2ct error: models/model.pt"):
        step_download_large_files(ctx)
    assert not (ctx.zoo_bundle / "models" / "model.pt").is_file()


def test_zoo_check_refuses_empty_supported_apps(tmp_path):
    """The zoo's property check runs once per supported app; none declared means nothing is checked."""
    from bundle.tools.checks import CheckError
    from bundle.tools.zoo_checks import ZooContext, step_package, step_verify_bundle_properties

    ctx = ZooContext(tmp_path)
    step_package(ctx)
    meta_path = ctx.zoo_bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["supported_apps"] = {}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckError, match="'supported_apps' is empty"):
        step_verify_bundle_properties(ctx)


def test_lint_gate_fails_then_fixes(tmp_path):
    """``python -m bundle lint`` on a small git project with the zoo's settings: unsorted imports, trailing
    whitespace, a missing final newline and a JSON file not in the zoo's layout fail; ``--fix`` repairs them."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(REPO / name, proj / name)
    (proj / "mod.py").write_text('"""Doc."""\nimport sys\nimport os   \n\nprint(os.sep, sys.argv)')
    (proj / "conf.json").write_text('{"b": [1, 2], "a": {"x": 1}}\n')
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    lint = [sys.executable, "-m", "bundle", "lint", "--bundle_root", str(proj)]
    res = _run(lint, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    for failed in ("FAIL  isort", "FAIL  black", "FAIL  flake8", "FAIL  pretty-format-json", "FAIL  end-of-file"):
        assert failed in res.stdout, res.stdout
    assert "mod.py: end-of-file-fixer" in res.stdout and "mod.py: trailing-whitespace: line(s) 3" in res.stdout
    res = _run([*lint, "--fix"], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (proj / "mod.py").read_text() == '"""Doc."""\n\nimport os\nimport sys\n\nprint(os.sep, sys.argv)\n'
    assert json.loads((proj / "conf.json").read_text()) == {"b": [1, 2], "a": {"x": 1}}
    assert (proj / "conf.json").read_text().startswith('{\n    "b": [\n        1,')
