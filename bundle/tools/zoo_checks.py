"""``python -m bundle zoo_check``: the MONAI Model Zoo's CI steps, run on the *packaged* bundle.

The Model Zoo's CI (Project-MONAI/model-zoo, ``ci/verify_bundle.py`` and ``ci/run_premerge_cpu.sh``)
runs on the bundle placed as ``models/<name>/`` in a copy of the zoo tree. This module does the same,
offline, with MONAI's own APIs (the zoo's code is neither downloaded nor copied):

1. ``package``: ``python -m bundle package`` builds the archive; its entries must be folders 0755 and
   files 0644; it is unpacked as ``<workdir>/models/perx2ct`` (the zoo tree).
2. ``download_large_files``: every ``large_files.yml`` entry is fetched with ``monai.apps.download_url``
   and its hash checked (with ``--url``, the checkpoint is published to that address first, e.g. a
   ``file://`` URL, and removed from the tree, so the download really has to happen).
3. ``verify_bundle_directory``: ``configs/metadata.json``, ``LICENSE`` (necessary), ``models/model.pt``,
   ``configs/inference.json`` (preferred; the zoo fails on them too).
4. ``verify_version_changes``: ``version`` is a key of ``changelog``.
5. ``verify_metadata_format``: ``monai.bundle.verify_metadata`` against a local schema copy.
6. ``verify_bundle_properties``: ``monai.bundle.create_workflow(...).check_properties()`` returns no
   missing property for ``inference`` (and, with ``--dataset_dir``, for ``train`` = ``train.json`` and
   ``eval`` = ``train.json`` + ``evaluate.json``); ``supported_apps`` is not empty.
7. ``verify_data_shape``: ``monai.bundle.verify_net_in_out`` (``network_def``, ``bundle_root`` only).
8. ``verify_torchscript``: ``monai.bundle.ckpt_export`` of ``models/model.pt``, ``torch.jit.load`` of the
   result, and every tensor of the reloaded module equal to the checkpoint's (``ckpt_export`` silently
   skips tensors whose shapes differ, so a wrong network would otherwise export random weights).
9. ``requirements_py310``: ``pip install --dry-run --only-binary=:all: --python-version X`` of what
   the zoo CI installs from ``metadata.json`` (``monai``, ``torch``, ``numpy`` and
   ``required_packages_version``) for Python 3.10 (the zoo CI's) and 3.11; PyPI only, metadata only.
   ``--offline`` skips it (``SKIP``). Before it, ``python310_syntax``: the bundle's ``scripts/`` compile
   under Python 3.10 (when an interpreter is found) and use none of 3.11's new features.

Like the zoo CI, steps 6-8 pass no override but ``bundle_root``: the configs must build the network
the checkpoint holds by themselves (``models/model.json``, :mod:`scripts.networks.checkpoint`).
Not covered: the zoo's ``model_info.json`` version-reuse check (needs the zoo's index), its ``pytype``
and ``pre-commit`` runs (the format gate is ``python -m bundle lint``), GPU-only TensorRT export.

One ``PASS``/``FAIL``/``WARN``/``SKIP`` line per step; exit status 1 if any fails.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bundle import BUNDLE_NAME, REPO_ROOT
from bundle.monailabel_app.lib.scripts_path import scripts_on_path
from bundle.tools.checks import (
    CheckError,
    CheckResult,
    check_changelog,
    check_metadata_schema,
    report,
    run_check,
    schema_path,
    verify_net_in_out,
)
from bundle.tools.package import package, write_large_files

__all__ = ["ZooContext", "STEPS", "run_zoo_checks", "zoo_check", "zoo_requirements"]

NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
PYTHONS = ("3.10", "3.11")


@dataclass
class ZooContext:
    """What the steps share: the zoo tree and the options."""

    workdir: Path
    ckpt_file: str | None = None
    url: str | None = None
    info_url: str | None = None
    schema: str | None = None
    dataset_dir: str | None = None
    cache_dir: str | None = None
    offline: bool = False
    bundle_root: Path = REPO_ROOT
    archive: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def zoo_bundle(self) -> Path:
        return self.workdir / "models" / BUNDLE_NAME


def _require_staged(ctx: ZooContext) -> Path:
    if not (ctx.zoo_bundle / "configs" / "metadata.json").is_file():
        raise CheckError("the bundle was not staged (the package step failed)")
    return ctx.zoo_bundle


# -------------------------------------------------------------------------------------------- steps
def step_package(ctx: ZooContext) -> tuple[str, str]:
    archive = Path(package(output=str(ctx.workdir / "dist"), bundle_root=str(ctx.bundle_root), ckpt_file=ctx.ckpt_file))
    ctx.archive = archive
    bad = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            want = (stat.S_IFDIR | 0o755) if info.is_dir() else (stat.S_IFREG | 0o644)
            if mode != want:
                bad.append(f"{info.filename} {oct(mode)}")
        if not any(i.is_dir() and i.filename == f"{BUNDLE_NAME}/models/" for i in zf.infolist()):
            bad.append(f"{BUNDLE_NAME}/models/ has no folder entry")
        shutil.rmtree(ctx.workdir / "models", ignore_errors=True)
        zf.extractall(ctx.workdir / "models")
    if bad:
        raise CheckError(f"archive entries with modes other than folders 0755 / files 0644: {', '.join(bad[:5])}")
    if ctx.url:
        ckpt = ctx.zoo_bundle / "models" / "model.pt"
        if not ckpt.is_file():
            raise CheckError("--url given but the archive holds no models/model.pt to publish (pass --ckpt_file)")
        write_large_files(ctx.zoo_bundle, ckpt, ctx.url, ctx.info_url)
        ckpt.unlink()  # the zoo tree holds only large_files.yml: the download step must fetch it
        if ctx.info_url:
            ckpt.with_suffix(".json").unlink()
    n = len(zipfile.ZipFile(archive).namelist())
    return "PASS", f"{archive.name}: {n} entries, folders 0755, files 0644; unpacked as models/{BUNDLE_NAME}"


def step_download_large_files(ctx: ZooContext) -> tuple[str, str]:
    from monai.apps import download_url
    from monai.bundle import ConfigParser

    root = _require_staged(ctx)
    path = root / "large_files.yml"
    if not path.is_file():
        return "WARN", "no large_files.yml (nothing to download)"
    entries = ConfigParser.load_config_file(str(path)).get("large_files")
    if not isinstance(entries, list):
        raise CheckError("large_files.yml: 'large_files' must be a list")
    if not entries:
        have = "present from the archive" if (root / "models" / "model.pt").is_file() else "absent"
        return "WARN", f"large_files.yml lists nothing (no weights published); models/model.pt {have}"
    for e in entries:
        if not e.get("url") or not e.get("hash_val"):
            raise CheckError(f"large_files.yml entry {e.get('path')}: empty url or hash_val (the zoo needs both)")
        try:
            download_url(
                url=e["url"],
                filepath=root / e["path"],
                hash_val=e["hash_val"],
                hash_type=e["hash_type"],
                progress=False,
            )
        except Exception as err:  # noqa: BLE001 - the zoo reports "Download large files in ... error."
            raise CheckError(
                f"Download large files in models/{BUNDLE_NAME} error: {e['path']} <- {e['url']}: {err}"
            ) from None
    return "PASS", f"{len(entries)} file(s) downloaded and hash-checked: {', '.join(e['path'] for e in entries)}"


def step_verify_bundle_directory(ctx: ZooContext) -> tuple[str, str]:
    root = _require_staged(ctx)
    for f in (*NECESSARY_FILES, *PREFERRED_FILES):
        if not (root / f).is_file():
            raise CheckError(f"necessary file {f} is not existing.")
    return "PASS", f"{', '.join((*NECESSARY_FILES, *PREFERRED_FILES))} present"


def step_verify_version_changes(ctx: ZooContext) -> tuple[str, str]:
    return check_changelog(_require_staged(ctx))


def step_verify_metadata_format(ctx: ZooContext) -> tuple[str, str]:
    root = _require_staged(ctx)
    schema = ctx.schema or str(schema_path(None, json.loads((root / "configs/metadata.json").read_text())))
    return check_metadata_schema(root, schema=schema)


def _check_workflow(root: Path, workflow_type: str, configs: list[str], **overrides: Any) -> list[str]:
    from monai.bundle import create_workflow

    config_file = [str(root / "configs" / c) for c in configs]
    workflow = create_workflow(
        workflow_type=workflow_type,
        config_file=config_file if len(config_file) > 1 else config_file[0],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root),
        **overrides,
    )
    return list(workflow.check_properties() or [])


def step_verify_bundle_properties(ctx: ZooContext) -> tuple[str, str]:
    root = _require_staged(ctx)
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    if not meta.get("supported_apps"):
        raise CheckError("metadata 'supported_apps' is empty: the zoo's property check would check nothing")
    runs = [("inference", ["inference.json"], {})]
    if ctx.dataset_dir:
        data = {"dataset_dir": str(Path(ctx.dataset_dir).resolve())}
        if ctx.cache_dir:
            data["cache_dir"] = str(Path(ctx.cache_dir).resolve())
        split = {"split_file": str(root / "configs" / "example_split.json")}
        runs += [
            ("train", ["train.json"], {**data, **split}),
            ("eval", ["train.json", "evaluate.json"], {**data, **split}),
        ]
    done, missing = [], {}
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level  # logging.conf replaces them
    try:
        with scripts_on_path(root):
            for wtype, configs, overrides in runs:
                result = _check_workflow(root, wtype, configs, **overrides)
                if result:
                    missing[f"{wtype} ({'+'.join(configs)})"] = result
                done.append(wtype)
    finally:
        root_logger.handlers[:] = saved_handlers
        root_logger.setLevel(saved_level)
    if missing:
        raise CheckError(f"check_properties: missing or wrongly named properties {missing}")
    note = "" if ctx.dataset_dir else " (train/eval need --dataset_dir)"
    return "PASS", f"no missing property for {', '.join(done)}{note}; supported_apps {sorted(meta['supported_apps'])}"


def _staged_parser(root: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    return parser


def step_verify_data_shape(ctx: ZooContext) -> tuple[str, str]:
    root = _require_staged(ctx)
    with scripts_on_path(root):
        verify_net_in_out(root, bundle_root=str(root))
    return "PASS", "network_def matches network_data_format (channels, dtype)"


def step_verify_torchscript(ctx: ZooContext) -> tuple[str, str]:
    import torch
    from monai.bundle import ckpt_export

    root = _require_staged(ctx)
    ckpt = root / "models" / "model.pt"
    if not ckpt.is_file():
        raise CheckError("models/model.pt is not existing: nothing to export")
    ts_path = root / "models" / "verify_model.ts"
    with scripts_on_path(root):
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(ts_path),
                ckpt_file=str(ckpt),
                meta_file=str(root / "configs" / "metadata.json"),
                config_file=str(root / "configs" / "inference.json"),
                bundle_root=str(root),
            )
        except Exception as e:  # noqa: BLE001
            hint = ""
            if "size mismatch" in str(e):
                hint = " (the config built another network than the checkpoint's: it must follow models/model.json)"
            raise CheckError(f"ckpt_export: {type(e).__name__}: {str(e)[:300]}{hint}") from None
        scripted = torch.jit.load(str(ts_path), map_location="cpu")
    # ckpt_export copies only the tensors whose shapes match: compare every tensor with the checkpoint
    ref = torch.load(ckpt, map_location="cpu", weights_only=True)
    got = scripted.state_dict()
    missing = sorted(set(ref) - set(got))
    differ = [k for k in ref if k in got and (got[k].shape != ref[k].shape or not torch.equal(got[k], ref[k]))]
    if missing or differ:
        raise CheckError(
            f"the exported module does not hold the checkpoint's weights: {len(missing)} key(s) missing "
            f"{missing[:3]}, {len(differ)} differ {differ[:3]} "
            "(the config built another network than models/model.pt's)"
        )
    return (
        "PASS",
        f"models/model.pt exported to TorchScript and reloaded; all {len(ref)} tensors equal the checkpoint's",
    )


def zoo_requirements(meta: dict) -> list[str]:
    """``name==version`` of everything the zoo CI installs from a bundle's metadata."""
    reqs = [
        f"{name}=={meta[key]}"
        for name, key in (("monai", "monai_version"), ("torch", "pytorch_version"), ("numpy", "numpy_version"))
        if key in meta
    ]
    reqs += [f"{name}=={version}" for name, version in meta.get("required_packages_version", {}).items()]
    return reqs


def _pip_resolves(requirements: list[str], python: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="perx2ct_pip_") as target:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--only-binary=:all:", "--python-version", python, "--target", target,
               *requirements]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    return proc.returncode == 0, (errors[-1] if errors else proc.stderr.strip()[-300:])


def step_requirements_py310(ctx: ZooContext) -> tuple[str, str]:
    if ctx.offline:
        return "SKIP", "--offline: not asked to PyPI"
    root = _require_staged(ctx)
    reqs = zoo_requirements(json.loads((root / "configs" / "metadata.json").read_text()))
    failed = []
    for python in PYTHONS:
        ok, _ = _pip_resolves(reqs, python)
        if not ok:  # name each requirement that has no wheel for this Python
            for req in reqs:
                ok_one, why = _pip_resolves([req], python)
                if not ok_one:
                    failed.append(f"{req} on Python {python} ({why})")
    if failed:
        raise CheckError(f"not installable as binary wheels: {'; '.join(failed)}")
    return "PASS", f"{len(reqs)} requirements have wheels for Python {' and '.join(PYTHONS)}"


_PY311_ONLY = re.compile(
    r"^\s*(import tomllib|from tomllib |except\*)|\bExceptionGroup\b|typing\.Self\b|from typing import[^\n]*\bSelf\b",
    re.M,
)


def _python310() -> str | None:
    """A Python 3.10 interpreter: ``python3.10`` on PATH, or pyenv's."""
    found = shutil.which("python3.10")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return found
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.10.*/bin/python3.10"))
    return str(pyenv[-1]) if pyenv else None


def step_python310_syntax(ctx: ZooContext) -> tuple[str, str]:
    root = _require_staged(ctx)
    files = sorted(str(p.relative_to(root)) for p in (root / "scripts").rglob("*.py"))
    hits = [f for f in files if _PY311_ONLY.search((root / f).read_text(encoding="utf-8"))]
    if hits:
        raise CheckError(
            f"Python 3.11-only features (tomllib, except*, ExceptionGroup, typing.Self) in {', '.join(hits)}"
        )
    py310 = _python310()
    if py310 is None:
        return "WARN", f"no Python 3.10 interpreter found: {len(files)} files scanned for 3.11-only features only"
    code = "import sys\nfor f in sys.argv[1:]: compile(open(f, encoding='utf-8').read(), f, 'exec')"
    proc = subprocess.run(
        [py310, "-c", code, *files], cwd=root, capture_output=True, encoding="utf-8", errors="replace"
    )
    if proc.returncode != 0:
        raise CheckError(f"Python 3.10 cannot compile the bundle's code: {proc.stderr.strip().splitlines()[-1]}")
    return "PASS", f"{len(files)} files of scripts/ compile under {py310} and use no 3.11-only feature"


STEPS: dict[str, Callable[[ZooContext], tuple[str, str]]] = {
    "package": step_package,
    "download_large_files": step_download_large_files,
    "verify_bundle_directory": step_verify_bundle_directory,
    "verify_version_changes": step_verify_version_changes,
    "verify_metadata_format": step_verify_metadata_format,
    "verify_bundle_properties": step_verify_bundle_properties,
    "verify_data_shape": step_verify_data_shape,
    "verify_torchscript": step_verify_torchscript,
    "python310_syntax": step_python310_syntax,
    "requirements_py310": step_requirements_py310,
}


def run_zoo_checks(ctx: ZooContext) -> list[CheckResult]:
    """Run every step in order; a step's unexpected error is a ``FAIL`` naming where it happened."""
    return [run_check(name, step, ctx) for name, step in STEPS.items()]


def zoo_check(
    ckpt_file: str | None = None,
    url: str | None = None,
    info_url: str | None = None,
    schema: str | None = None,
    dataset_dir: str | None = None,
    cache_dir: str | None = None,
    workdir: str | None = None,
    offline: bool = False,
) -> None:
    """Run the Model Zoo's CI steps on the packaged bundle; exit status 1 if any fails.

    Args:
        ckpt_file: checkpoint to package as ``models/model.pt`` (with its ``model.json`` sidecar); default
            the repository's ``models/model.pt``.
        url: publish the checkpoint to this address for the download step (``file://`` for a local test).
        info_url: the same for the sidecar ``model.json``.
        schema: local copy of the metadata schema (default ``bundle/tools/schemas/<file named in metadata>``).
        dataset_dir: data for the ``train``/``eval`` property checks (raw or prepared CTs).
        cache_dir: the training cache for ``dataset_dir`` (``PersistentDataset``).
        workdir: where the zoo tree is made (default: a temporary folder, removed afterwards).
        offline: skip the PyPI step.
    """
    for name in ("monai.bundle.scripts", "monai.apps.utils", "monai.apps", "monai.bundle.workflows"):
        logging.getLogger(name).setLevel(logging.ERROR)
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="perx2ct_zoo_")
        workdir = tmp
    try:
        ctx = ZooContext(Path(workdir).resolve(), ckpt_file=ckpt_file, url=url, info_url=info_url, schema=schema,
                         dataset_dir=dataset_dir, cache_dir=cache_dir, offline=offline)  # fmt: skip
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        results = run_zoo_checks(ctx)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report(results, "zoo_check", width=25)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    import fire

    fire.Fire(zoo_check)
