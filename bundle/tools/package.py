"""``python -m bundle package --output DIR``: the bundle archive for ``monai.bundle download`` / ``load``.

Writes ``DIR/perx2ct_<version>.zip`` (version from ``configs/metadata.json``) holding one top-level
folder ``perx2ct/`` - the layout ``monai.bundle.download(name="perx2ct", url=...)`` extracts into
``<bundle_dir>/perx2ct`` and ``monai.bundle.load(name="perx2ct", ...)`` reads:

    perx2ct/configs/*            every config (json/yaml/conf)
    perx2ct/scripts/**/*.py      the bundle's Python package
    perx2ct/docs/*               model card, data licence, ...
    perx2ct/models/model.pt      ``--ckpt_file`` or the repository's ``models/model.pt`` when present
    perx2ct/models/model.json    that checkpoint's sidecar (``scripts.networks.checkpoint``: which network it is)
    perx2ct/LICENSE, perx2ct/large_files.yml

Never packed: caches (``__pycache__``, ``*.pyc``, dot files), data, run outputs, tests and the
tooling in ``bundle/``. Entries are sorted and time-stamped 1980-01-01, so the same inputs give the
same archive bytes. Every folder has its own entry with mode 0755 and every file mode 0644, so an
archive unpacked by ``unzip`` (which applies the modes) lets any user put ``models/model.pt`` in place.

Publishing weights (``--url``): the checkpoint's sha256 is computed and ``large_files.yml`` is
rewritten with one entry ``models/model.pt`` -> ``--url`` (plus ``models/model.json`` -> ``--info_url``
when given), the format the Model Zoo's CI downloads and checks with ``monai.apps.download_url``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from scripts.assets.hashing import file_digest
from scripts.utils.atomic import atomic_write_bytes

from bundle import BUNDLE_NAME, REPO_ROOT

__all__ = [
    "BUNDLE_TREES",
    "TOP_FILES",
    "bundle_files",
    "in_archive",
    "large_files_yaml",
    "package",
    "write_large_files",
]

#: What the archive holds: these folders (with the file types named, None: any) and top-level files.
BUNDLE_TREES = {"configs": None, "scripts": (".py",), "docs": None}
TOP_FILES = ("LICENSE", "large_files.yml")
_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".tmp", ".swp")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE, _DIR_MODE = 0o644, 0o755
_URL_SCHEMES = ("https://", "http://", "file://")
_LARGE_FILES_HEADER = """\
# Large files of the PerX2CT bundle, in the MONAI Model Zoo format (large_files: [{path, url, hash_val, hash_type}]),
# downloaded and hash-checked by the Model Zoo's CI (monai.apps.download_url) and checked by `python -m bundle verify`.
# Written by `python -m bundle package --ckpt_file CKPT --url URL` (docs/README.md, "Publishing"); do not edit by hand.
"""
_NOTHING_PUBLISHED = """\
#
# NO WEIGHTS ARE PUBLISHED YET: the list is empty (never a placeholder URL or an empty hash). Until then train a model
# (`python -m monai.bundle run training --config_file configs/train.json`) or pass a checkpoint with --ckpt_path.
"""


def _wanted(rel: Path, suffixes: tuple[str, ...] | None) -> bool:
    if any(p in _EXCLUDED_PARTS or p.startswith(".") for p in rel.parts):
        return False
    if rel.name.endswith(_EXCLUDED_SUFFIXES):
        return False
    return suffixes is None or rel.name.endswith(suffixes)


def in_archive(name: str) -> bool:
    """Whether the project file ``name`` (relative to the bundle root, ``/``-separated) goes into the archive
    (the checkpoint aside, which ``bundle_files`` adds)."""
    rel = Path(name)
    if name in TOP_FILES:
        return True
    return len(rel.parts) > 1 and rel.parts[0] in BUNDLE_TREES and _wanted(rel, BUNDLE_TREES[rel.parts[0]])


def bundle_files(root: Path, ckpt_file: str | None = None) -> dict[str, Path]:
    """Archive name (relative to ``perx2ct/``) -> source file."""
    files: dict[str, Path] = {}
    for tree, suffixes in BUNDLE_TREES.items():
        base = root / tree
        if not base.is_dir():
            raise FileNotFoundError(f"bundle folder {base} not found: run from the bundle root or pass --bundle_root")
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and _wanted(rel, suffixes):
                files[rel.as_posix()] = path
    for name in TOP_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} not found: the bundle archive needs it")
        files[name] = root / name
    ckpt = Path(ckpt_file) if ckpt_file else root / "models" / "model.pt"
    if ckpt_file and not ckpt.is_file():
        raise FileNotFoundError(f"--ckpt_file {ckpt_file} not found")
    if ckpt.is_file():
        files["models/model.pt"] = ckpt
        sidecar = ckpt.with_suffix(".json")  # scripts.networks.checkpoint.info_path
        if sidecar.is_file():
            files["models/model.json"] = sidecar
    return files


def large_files_yaml(entries: list[dict[str, str]]) -> str:
    """The text of ``large_files.yml`` for ``entries`` (``[]``: nothing published, said in a comment)."""
    if not entries:
        return _LARGE_FILES_HEADER + _NOTHING_PUBLISHED + "large_files: []\n"
    lines = [_LARGE_FILES_HEADER.rstrip("\n"), "large_files:"]
    for e in entries:
        lines.append(f'  - path: "{e["path"]}"')
        for key in ("url", "hash_val", "hash_type"):
            lines.append(f'    {key}: "{e[key]}"')
    return "\n".join(lines) + "\n"


def write_large_files(
    root: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    url: str,
    info_url: str | None = None,
    hash_type: str = "sha256",
) -> list[dict[str, str]]:
    """Rewrite ``root/large_files.yml`` (atomically) so ``models/model.pt`` is fetched from ``url``.

    ``hash_val`` is ``ckpt_file``'s digest; with ``info_url`` its sidecar ``models/model.json`` gets an entry too.
    """
    ckpt = Path(ckpt_file)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found: --url publishes the file given by --ckpt_file")
    entries = []
    for path, source, link in (
        ("models/model.pt", ckpt, url),
        ("models/model.json", ckpt.with_suffix(".json"), info_url),
    ):
        if link is None:
            continue
        if not str(link).startswith(_URL_SCHEMES) or str(link).rstrip("/").endswith(("://", "/")):
            raise ValueError(f"--url {link!r} is not the address of a file (https://..., http://... or file://...)")
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found: --info_url publishes the checkpoint's sidecar")
        entries.append(
            {"path": path, "url": str(link), "hash_val": file_digest(source, hash_type), "hash_type": hash_type}
        )
    atomic_write_bytes(Path(root) / "large_files.yml", large_files_yaml(entries).encode())
    return entries


def _folders(names: list[str]) -> list[str]:
    """Every folder above the archive names (``perx2ct/``, ``perx2ct/configs/``, ...), sorted."""
    folders = {f"{BUNDLE_NAME}/models/"}
    for name in names:
        parts = f"{BUNDLE_NAME}/{name}".split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    return sorted(folders)


def package(
    output: str = "dist",
    bundle_root: str | None = None,
    ckpt_file: str | None = None,
    url: str | None = None,
    info_url: str | None = None,
    hash_type: str = "sha256",
) -> str:
    """Write ``<output>/perx2ct_<version>.zip``; returns its path.

    Args:
        output: the folder to write the archive into (created if needed).
        bundle_root: the bundle root (default: this repository).
        ckpt_file: a state dict to ship as ``models/model.pt`` (default: ``models/model.pt`` if present;
            without either the archive has an empty ``models/`` folder); its sidecar ``.json`` goes along.
        url: where the checkpoint is (or will be) published: ``large_files.yml`` is rewritten first with
            its address and hash (then the archive carries that ``large_files.yml``).
        info_url: where the checkpoint's sidecar ``model.json`` is published (optional second entry).
        hash_type: digest written to ``large_files.yml`` (sha256).
    """
    root = Path(bundle_root).resolve() if bundle_root else REPO_ROOT
    if info_url and not url:
        raise ValueError("--info_url needs --url (the checkpoint's address)")
    if url:
        ckpt = Path(ckpt_file) if ckpt_file else root / "models" / "model.pt"
        for e in write_large_files(root, ckpt, url, info_url, hash_type):
            print(f"large_files.yml: {e['path']} <- {e['url']} ({e['hash_type']} {e['hash_val']})")
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
            for folder in _folders(names):
                info = zipfile.ZipInfo(folder, _FIXED_TIME)
                info.external_attr = ((0o040000 | _DIR_MODE) << 16) | 0x10  # S_IFDIR | 0755, MS-DOS directory bit
                zf.writestr(info, b"")
            for name in names:
                info = zipfile.ZipInfo(f"{BUNDLE_NAME}/{name}", _FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100000 | _FILE_MODE) << 16  # S_IFREG | 0644
                zf.writestr(info, files[name].read_bytes())
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    size_mb = archive.stat().st_size / 1e6
    weights = "included" if "models/model.pt" in files else "absent"
    print(f"wrote {archive} ({len(files)} files, {size_mb:.1f} MB, model.pt {weights})")
    return str(archive)
