"""``python -m scripts drr`` pays only for what a DRR needs: its command imports neither MONAI nor the networks, and
its CT loader (``load_ct_array``) gives what ``load_ct`` gives, without a MetaTensor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scripts.ct.loader import load_ct, load_ct_array

ROOT = Path(__file__).resolve().parents[1]


def test_drr_command_imports_no_monai_or_networks():
    code = (
        "import sys\n"
        "from scripts.__main__ import _commands\n"
        "cmds = _commands(['drr', '--ct', 'x'])\n"
        "assert list(cmds) == ['drr'], cmds\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'ignite') or m.startswith('scripts.networks'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_top_level_help_lists_every_command():
    from scripts.__main__ import COMMANDS, _commands

    assert list(_commands([])) == list(COMMANDS)
    assert list(_commands(["--help"])) == list(COMMANDS)


def test_load_ct_array_matches_load_ct(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(-1024, 1500, (40, 36, 30)).astype(np.int16)
    vol[0, 0, 0] = -3024  # padding -> -1024 in both
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    arr, aff, meta = load_ct_array(path)
    mt = load_ct(path)
    np.testing.assert_array_equal(arr, mt.numpy()[0])
    np.testing.assert_array_equal(aff, mt.affine.numpy())
    assert arr.dtype == np.float32 and arr.min() == -1024  # the -3024 padding voxel became air
    assert meta["case_id"] == mt.meta["case_id"] == "ct"
