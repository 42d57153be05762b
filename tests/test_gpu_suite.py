"""The GPU suite (tests/benchmarks/gpu_suite.py) in its CPU smoke mode, so that the script run on GPU time cannot rot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark script in a process
def test_gpu_suite_cpu_small(tmp_path):
    out = tmp_path / "suite.json"
    cmd = [
        sys.executable,
        str(ROOT / "tests/benchmarks/gpu_suite.py"),
        "--device",
        "cpu",
        "--small",
        "--json",
        str(out),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())
    by = {}
    for r in rows:
        by.setdefault(r["section"], []).append(r)
    assert set(by) >= {"machine", "projector", "diffdrr", "train", "onthefly", "inference"}, sorted(by)
    assert [r["size"] for r in by["projector"]] == [32, 48]
    assert all(math.isfinite(r["drrs_per_s"]) and r["drrs_per_s"] > 0 for r in by["projector"])
    # DiffDRR: measured rows, or the one skip line when it is not importable
    assert all("drrs_per_s" in r for r in by["diffdrr"]) or "skipped" in by["diffdrr"][0]["text"]
    fp32 = [r for r in by["train"] if r.get("amp") is False]
    assert len(fp32) == 1 and fp32[0]["s_per_it"] > 0 and fp32[0]["preset"] == "small"
    assert 0 < by["onthefly"][0]["share"] < 100
    timed = {r["dtype"]: r for r in by["inference"] if "dtype" in r}
    assert set(timed) == {"fp32", "bf16"} and all(r["seconds"] > 0 for r in timed.values())
    assert math.isfinite(timed["bf16"]["max_dhu"]) and timed["bf16"]["mean_dhu"] >= 0
    # every printed line is the one kept for --json
    assert all(f"[{r['section']}] {r['text']}" in p.stdout for r in rows)
