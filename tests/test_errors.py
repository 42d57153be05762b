"""One line per expected error: the excepthook finds the bundle's message through MONAI's wrapping exceptions,
writes the full traceback to the log file, and leaves real bugs with their traceback."""

from __future__ import annotations

import pytest
import torch
from scripts import errors
from scripts.networks.checkpoint import CheckpointError, require_checkpoint, resolve_network, write_info


def wrapped(exc: BaseException) -> BaseException:
    """``exc`` as MONAI's config evaluation delivers it: RuntimeError("Failed to evaluate ...") from it."""
    try:
        try:
            raise exc
        except Exception as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: $scripts.x(@y)") from e
    except RuntimeError as outer:
        return outer


def report(exc: BaseException, capsys, monkeypatch, tmp_path) -> str:
    monkeypatch.setenv(errors.LOG_ENV, str(tmp_path / "last_error.log"))
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    errors.report(type(exc), exc, exc.__traceback__)
    return capsys.readouterr().err


def test_bundle_error_through_monai_wrapper_is_one_line_with_the_log(capsys, monkeypatch, tmp_path):
    try:
        require_checkpoint(tmp_path / "missing.pt")
    except FileNotFoundError as e:
        exc = wrapped(e)
    err = report(exc, capsys, monkeypatch, tmp_path)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint (--ckpt_path) not found: "), err
    assert str(tmp_path / "missing.pt") in lines[0] and "PERX2CT_DEBUG=1" in lines[0]
    log = (tmp_path / "last_error.log").read_text()
    assert "Traceback" in log and "Failed to evaluate" in log and "require_checkpoint" in log


def test_bundle_message_wins_over_the_library_cause(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "trunc.pt"
    torch.save({"w": torch.zeros(1000)}, bad)
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(CheckpointError) as e:
        require_checkpoint(bad)
    err = report(
        wrapped(e.value), capsys, monkeypatch, tmp_path
    )  # chain: RuntimeError -> CheckpointError -> BadZipFile
    assert err.startswith(f"error: checkpoint (--ckpt_path) {bad} is corrupt or truncated"), err


def test_state_dict_mismatch_is_summarised(capsys, monkeypatch, tmp_path):
    try:
        torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 4).state_dict())
    except RuntimeError as e:
        exc = wrapped(e)
    err = report(exc, capsys, monkeypatch, tmp_path)
    assert err.count("\n") == 1 and "2 size mismatches" in err and "--model_preset" in err, err


def test_a_bug_keeps_its_traceback(capsys, monkeypatch, tmp_path):
    try:
        {}["x"]  # a KeyError raised outside the bundle's code: a bug, not an input problem
    except KeyError as e:
        exc = wrapped(e)
    err = report(exc, capsys, monkeypatch, tmp_path)
    assert "Traceback" in err and "KeyError" in err
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    try:
        require_checkpoint(tmp_path / "missing.pt")
    except FileNotFoundError as e:
        errors.report(FileNotFoundError, e, e.__traceback__)
    assert "Traceback" in capsys.readouterr().err, "PERX2CT_DEBUG=1 prints the traceback"


def test_preset_contradiction_names_both(tmp_path):
    ckpt = tmp_path / "model.pt"
    torch.save({}, ckpt)
    write_info(ckpt, model_preset="small", geometry_preset="perx2ct")
    assert resolve_network(ckpt)["model_preset"] == "small"
    assert resolve_network(ckpt, "small", "perx2ct")["geometry_preset"] == "perx2ct"
    assert resolve_network(tmp_path / "bare.pt")["model_preset"] == "paper"  # no sidecar: the default
    with pytest.raises(CheckpointError, match=r"--model_preset paper contradicts .* 'small'"):
        resolve_network(ckpt, "paper")


@pytest.mark.slow
def test_entry_point_python_m_scripts_prints_one_line(tmp_path, scripts_command):
    """`python -m scripts drr` with a missing CT: one error line, exit status 1."""
    res = scripts_command(
        "drr",
        "--ct",
        str(tmp_path / "none"),
        "--view",
        "pa",
        "--output",
        str(tmp_path / "x.nii.gz"),
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip().splitlines()[-1].startswith("error: "), res.stderr
