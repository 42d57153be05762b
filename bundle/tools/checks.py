"""What the bundle tools share: one result type and report, and the checks both ``python -m bundle verify``
(:mod:`.verify`) and ``python -m bundle zoo_check`` (:mod:`.zoo_checks`) run.

* :class:`CheckError`, :class:`CheckResult`, :func:`run_check` (one timed check; an unexpected error is a
  ``FAIL`` naming where it happened) and :func:`report` (one line per check, exit status 1 on a failure);
* :func:`read_metadata`, :func:`schema_path` (the local copy of MONAI's schema in ``schemas/``);
* the shared checks :func:`check_changelog`, :func:`check_metadata_schema` and :func:`verify_net_in_out`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "CheckError",
    "CheckResult",
    "SCHEMA_DIR",
    "check_changelog",
    "check_metadata_schema",
    "read_metadata",
    "report",
    "run_check",
    "schema_path",
    "verify_net_in_out",
]

#: Local copies of MONAI's bundle metadata schemas (the file named by metadata.json's ``schema`` URL), so that
#: verification needs no network: MONAI's own schema file, Apache-2.0, as published by Project-MONAI.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


class CheckError(Exception):
    """A check's specific failure message (printed as is)."""


@dataclass
class CheckResult:
    name: str
    status: str  # "PASS", "FAIL", "WARN" or "SKIP"
    message: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def line(self, width: int = 17) -> str:
        return f"{self.status:4s}  {self.name:{width}s} {self.message} ({self.seconds:.1f} s)"


def run_check(name: str, check: Callable[..., tuple[str, str]], *args: Any, **kwargs: Any) -> CheckResult:
    """Run one check (it returns ``(status, message)`` or raises :class:`CheckError`) and time it; never raises
    for an error of the check: an unexpected one is a ``FAIL`` naming its last frame."""
    start = time.perf_counter()
    try:
        status, message = check(*args, **kwargs)
    except CheckError as e:
        status, message = "FAIL", str(e)
    except Exception as e:  # noqa: BLE001 - an unexpected error is a failure with its traceback's last frame
        tb = traceback.extract_tb(e.__traceback__)[-1]
        status, message = "FAIL", f"{type(e).__name__}: {e} (at {Path(tb.filename).name}:{tb.lineno})"
    return CheckResult(name, status, message, time.perf_counter() - start)


def report(results: list[CheckResult], command: str, width: int = 17) -> None:
    """Print one line per check (name padded to ``width``), then ``<command>: N passed, M failed``;
    exit 1 when any failed."""
    for r in results:
        print(r.line(width), flush=True)
    failed = [r.name for r in results if not r.ok]
    print(
        f"{command}: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    if failed:
        sys.exit(1)


def read_metadata(root: Path) -> dict:
    """``root/configs/metadata.json`` as a dict; a missing or invalid file is a :class:`CheckError`."""
    path = root / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"{path} not found") from None
    except json.JSONDecodeError as e:
        raise CheckError(f"{path} is not valid JSON: {e}") from None


def schema_path(schema: str | None, meta: dict) -> Path:
    """``schema`` if given, else the local copy in :data:`SCHEMA_DIR` of the file the metadata's URL names."""
    if schema:
        return Path(schema).expanduser().resolve()
    url = meta.get("schema")
    if not url:
        raise CheckError("metadata has no 'schema' URL")
    return (SCHEMA_DIR / url.rstrip("/").rsplit("/", 1)[-1]).resolve()


def check_changelog(root: Path, **_: Any) -> tuple[str, str]:
    """Metadata ``version`` is a key of ``changelog`` (the Model Zoo's ``verify_version_changes``)."""
    meta = read_metadata(root)
    if "version" not in meta:
        raise CheckError("'version' is missing in configs/metadata.json")
    if not isinstance(meta.get("changelog"), dict):
        raise CheckError("'changelog' (a mapping version -> description) is missing in configs/metadata.json")
    version = meta["version"]
    if version not in meta["changelog"]:
        raise CheckError(
            f"version {version} is not a key of 'changelog' in configs/metadata.json "
            f"(changelog has: {', '.join(meta['changelog']) or 'nothing'}); add a \"{version}\" entry"
        )
    return "PASS", f"version {version} is in changelog"


def check_metadata_schema(root: Path, schema: str | None = None, **_: Any) -> tuple[str, str]:
    """``monai.bundle.verify_metadata`` against a local schema copy (no download is attempted)."""
    from monai.bundle import verify_metadata  # monai is heavy: loaded by the checks that use it

    meta = read_metadata(root)
    path = schema_path(schema, meta)
    if not path.is_file():
        raise CheckError(
            f"schema file not found: {path} (no download is attempted); pass --schema PATH to a local copy"
        )
    logging.getLogger("monai.apps").setLevel(logging.WARNING)
    try:
        # with an existing `filepath` and no hash, verify_metadata uses the file and downloads nothing
        verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(path), create_dir=False)
    except ValueError as e:
        raise CheckError(f"metadata does not match {path.name}: {e}") from None
    return "PASS", f"configs/metadata.json is valid against {path.name}"


def verify_net_in_out(root: Path, **kwargs: Any) -> None:
    """MONAI's ``verify_net_in_out`` on ``network_def`` of ``root``'s ``configs/inference.json`` and
    ``configs/metadata.json`` (``kwargs``: its device and config overrides), a failure as one CheckError line.
    Call it inside ``scripts_on_path(root)``."""
    from monai.bundle import verify_net_in_out as monai_verify_net_in_out  # monai is heavy: loaded when used

    try:
        monai_verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001
        raise CheckError(f"verify_net_in_out: {type(e).__name__}: {e}") from None
