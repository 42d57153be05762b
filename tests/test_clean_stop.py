"""Ctrl-C / SIGTERM anywhere: real signals sent to real processes.

Within 2 s of SIGINT or SIGTERM the run prints its one line (``interrupted ...``) and exits with status 130,
having kept what can be resumed. The fast tests check :func:`scripts.errors.listen` on a small Python process;
the slow ones start the README's quick training (``configs/quick.json``) and signal it while validation
reconstructs a volume and while the slice cache is being built. ``SIGINT`` is sent to a process that inherited it
as *ignored*, as a run started in the background from a script (``cmd &`` without job control) does: the
measurement behind issue 21 (no reaction within 30 s during validation) was of such a run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import quick_train_args

REPO = Path(__file__).resolve().parents[1]
#: The budget of issue 21: the one line within 2 s of the signal.
LINE_S = 2.0
#: The exit may come a little later: the interpreter's teardown after the line (measured 0.3-1.0 s on 2 busy CPU
#: cores with the final garbage collection skipped, scripts.errors._quick_exit; 2-5 s without it).
EXIT_S = 3.0


def _ignore_sigint() -> None:
    # what a shell without job control does to `cmd &`: the child starts with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _child(code: str, *, ignore_sigint: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if ignore_sigint else None,
    )


BUSY = """
    import sys, time
    from scripts.errors import check_stop, listen, stop
    listen()
    try:
        print("ready", flush=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            {body}
    except KeyboardInterrupt:
        raise stop("interrupted in the loop")
    print("not interrupted", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_listen_turns_a_stop_signal_into_one_line_and_status_130(sig):
    # SIGINT inherited as ignored: Python alone would never raise KeyboardInterrupt for it
    proc = _child(BUSY.format(body="sum(range(1000))"), ignore_sigint=True)
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "interrupted in the loop" and "not interrupted" not in out, (out, err)
    assert took < EXIT_S, took


def test_a_swallowed_interrupt_is_still_acted_on_by_check_stop():
    # a library that swallows the KeyboardInterrupt (here: a bare except) cannot hide the request from check_stop
    body = "\n".join(
        [
            "try:",
            "                time.sleep(0.01)",
            "            except KeyboardInterrupt:",
            "                pass",
            "            check_stop()",
        ]
    )
    proc = _child(BUSY.format(body=body))
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "interrupted in the loop", (out, err)
    assert time.monotonic() - t0 < EXIT_S


def test_an_interrupt_swallowed_before_long_work_is_raised_again():
    # what ITK's lazy module loading does: the KeyboardInterrupt is swallowed, then seconds of work follow with
    # no check_stop in sight; the watchdog (scripts.errors.REPEAT_S) raises it again until a handler takes it
    body = "\n".join(
        [
            "try:",
            "                time.sleep(0.01)",
            "            except KeyboardInterrupt:",
            "                t1 = time.monotonic()",
            "                while time.monotonic() - t1 < 20:",
            "                    sum(range(1000))",
        ]
    )
    proc = _child(BUSY.format(body=body))
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 130 and err.strip() == "interrupted in the loop", (out, err)
    assert took < EXIT_S, took


def test_an_acknowledged_interrupt_is_not_raised_again():
    # a handler that saves after acknowledging is never interrupted by the watchdog, however long the save takes
    code = """
    import time
    from scripts.errors import REPEAT_S, acknowledge, listen, stop
    listen()
    try:
        print("ready", flush=True)
        time.sleep(30)
    except KeyboardInterrupt:
        acknowledge()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4 * REPEAT_S:
            sum(range(1000))
        raise stop("saved and stopped")
    """
    proc = _child(code)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "saved and stopped", (out, err)


def test_listen_leaves_another_tools_handler_alone():
    code = """
        import signal
        from scripts.errors import listen
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        listen()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT).__module__ == "scripts.errors"
        print("ok")
    """
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ------------------------------------------------------------------------------ the quick training, signalled
def _signal_when(args: list[str], marker: str, sig: int, log: Path, ignore_sigint: bool = False) -> dict:
    """Start ``python -m monai.bundle run <args>``, send ``sig`` as soon as ``marker`` is in its output, and time
    the one line (``interrupted ...`` after the signal) and the exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PERX2CT_DEBUG", None)
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", "run", *args],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_ignore_sigint if ignore_sigint else None,
        )
        try:
            deadline = time.monotonic() + 900
            while marker not in log.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.02)
            before = len(log.read_text(errors="replace"))
            t0 = time.monotonic()
            proc.send_signal(sig)
            line_s = None
            while proc.poll() is None and time.monotonic() - t0 < 60:
                if line_s is None and "\ninterrupted " in log.read_text(errors="replace")[before:]:
                    line_s = time.monotonic() - t0
                time.sleep(0.01)
            exit_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    if line_s is None and "\ninterrupted " in text[before:]:
        line_s = exit_s
    lines = [ln for ln in text[before:].splitlines() if ln.startswith("interrupted ")]
    print(
        f"{marker!r} + {signal.Signals(sig).name}: line after {line_s} s, exit {proc.returncode} after {exit_s:.2f} s"
    )
    return {"rc": proc.returncode, "line_s": line_s, "exit_s": exit_s, "lines": lines, "text": text}


@pytest.mark.slow
def test_ctrl_c_during_validation_saves_and_resumes(example_raw_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    args = quick_train_args(out, example_raw_dir, "--epoch_length", "2", "--held_out_reconstruction", "false")
    r = _signal_when(args, "validation case 1/1", signal.SIGINT, tmp_path / "log.txt", ignore_sigint=True)
    assert r["rc"] == 130, r["text"][-3000:]
    assert "Traceback" not in r["text"] and "KeyboardInterrupt" not in r["text"], r["text"][-3000:]
    assert len(r["lines"]) == 1, r["text"][-3000:]
    line = r["lines"][0]
    assert line.startswith("interrupted at epoch 1, iteration 2, in validation (resuming starts epoch 2"), line
    assert r["line_s"] is not None and r["line_s"] < LINE_S and r["exit_s"] < EXIT_S, (r["line_s"], r["exit_s"])
    saved = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert saved["trainer"]["iteration"] == 2 and saved["trainer"]["epoch_length"] == 2
    # the printed command resumes: epoch 2 runs from the saved point and the run ends normally
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[command.index("--resume") + 1] == "true"
    res = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Epoch: 2/2, Iter: 1/2" in res.stdout + res.stderr and "Epoch: 1/2" not in res.stdout + res.stderr
    resumed = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert resumed["trainer"]["iteration"] == 4


@pytest.mark.slow
def test_sigterm_while_the_slice_cache_is_built(example_raw_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    args = quick_train_args(out, example_raw_dir, "--held_out_reconstruction", "false")
    r = _signal_when(args, "caching LIDC-IDRI-0001 for slice sampling", signal.SIGTERM, tmp_path / "log.txt")
    assert r["rc"] == 130, r["text"][-3000:]
    assert "Traceback" not in r["text"] and "KeyboardInterrupt" not in r["text"], r["text"][-3000:]
    assert len(r["lines"]) == 1 and r["lines"][0].startswith("interrupted while building the slice cache (0/1 cases")
    assert "run again with: " in r["lines"][0]
    assert r["line_s"] is not None and r["line_s"] < LINE_S and r["exit_s"] < EXIT_S, (r["line_s"], r["exit_s"])
    # nothing half-written passes for a cached case: the next run decodes it again
    assert not list((tmp_path / "cache").glob("slices/*/case.json"))
