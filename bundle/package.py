"""``python -m bundle package --output DIR``: the bundle archive for ``monai.bundle download`` / ``load``.

Writes ``DIR/perx2ct_<version>.zip`` (version from ``configs/metadata.json``) holding one top-level
folder ``perx2ct/`` - the layout ``monai.bundle.download(name="perx2ct", url=...)`` extracts into
``<bundle_dir>/perx2ct`` and ``monai.bundle.load(name="perx2ct", ...)`` reads:

    perx2ct/configs/*            every config (json/yaml/conf)
    perx2ct/scripts/**/*.py      the bundle's Python package
    perx2ct/docs/*               model card, data licence, ...
    perx2ct/models/model.pt      ``--ckpt_file`` or the repository's ``models/model.pt`` when present
    perx2ct/LICENSE, perx2ct/large_files.yml

Never packed: caches (``__pycache__``, ``*.pyc``, dot files), data, run outputs, tests and the
tooling in ``bundle/``. Entries are sorted and time-stamped 1980-01-01, so the same inputs give the
same archive bytes.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from bundle import BUNDLE_NAME, REPO_ROOT

__all__ = ["bundle_files", "package"]

_TREES = {"configs": None, "scripts": (".py",), "docs": None}  # None: any file type
_TOP_FILES = ("LICENSE", "large_files.yml")
_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".tmp", ".swp")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _wanted(rel: Path, suffixes: tuple[str, ...] | None) -> bool:
    if any(p in _EXCLUDED_PARTS or p.startswith(".") for p in rel.parts):
        return False
    if rel.name.endswith(_EXCLUDED_SUFFIXES):
        return False
    return suffixes is None or rel.name.endswith(suffixes)


def bundle_files(root: Path, ckpt_file: str | None = None) -> dict[str, Path]:
    """Archive name (relative to ``perx2ct/``) -> source file."""
    files: dict[str, Path] = {}
    for tree, suffixes in _TREES.items():
        base = root / tree
        if not base.is_dir():
            raise FileNotFoundError(f"bundle folder {base} not found: run from the bundle root or pass --bundle_root")
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and _wanted(rel, suffixes):
                files[rel.as_posix()] = path
    for name in _TOP_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: the bundle archive needs it")
        files[name] = root / name
    ckpt = Path(ckpt_file) if ckpt_file else root / "models" / "model.pt"
    if ckpt_file and not ckpt.is_file():
        raise FileNotFoundError(f"--ckpt_file {ckpt_file} not found")
    if ckpt.is_file():
        files["models/model.pt"] = ckpt
    return files


def package(output: str = "dist", bundle_root: str | None = None, ckpt_file: str | None = None) -> str:
    """Write ``<output>/perx2ct_<version>.zip``; returns its path.

    Args:
        output: the folder to write the archive into (created if needed).
        bundle_root: the bundle root (default: this repository).
        ckpt_file: a state dict to ship as ``models/model.pt`` (default: ``models/model.pt`` if present;
            without either the archive has an empty ``models/`` folder).
    """
    root = Path(bundle_root).resolve() if bundle_root else REPO_ROOT
    meta_path = root / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: the archive is named after its version")
    version = json.loads(meta_path.read_text())["version"]
    files = bundle_files(root, ckpt_file)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{BUNDLE_NAME}_{version}.zip"
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            names = sorted(files)
            if "models/model.pt" not in files:
                zf.writestr(zipfile.ZipInfo(f"{BUNDLE_NAME}/models/", _FIXED_TIME), b"")
            for name in names:
                info = zipfile.ZipInfo(f"{BUNDLE_NAME}/{name}", _FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, files[name].read_bytes())
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    size_mb = archive.stat().st_size / 1e6
    print(f"wrote {archive} ({len(files)} files, {size_mb:.1f} MB, model.pt {'included' if 'models/model.pt' in files else 'absent'})")
    return str(archive)
