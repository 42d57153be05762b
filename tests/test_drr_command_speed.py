"""What keeps ``python -m scripts drr`` fast (issue 23) without changing a value: the ITK backend never imports torch,
ITK classes come from their own wrapper modules, the CT stays in ITK's memory order, and the HU -> attenuation
conversion gives the same float32 values in one buffer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scripts.ct.itk_modules import array_image_view, array_to_matrix, image_array_view, itk_class, matrix_to_array
from scripts.ct.loader import load_ct_array
from scripts.projection.attenuation import hu_to_attenuation

ROOT = Path(__file__).resolve().parents[1]


def _nifti(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    vol = rng.integers(-1024, 1500, (40, 36, 30)).astype(np.int16)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS axis-aligned after the loader's flips
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    return path


def test_itk_drr_command_runs_without_torch(tmp_path):
    """The whole ``drr`` command with the ITK backend, in a fresh interpreter: torch (1.2-1.5 s to import on 2 cores)
    is never imported, not by the bundle's modules nor by ITK's filter wrappers; the output is written."""
    ct = _nifti(tmp_path)
    out = tmp_path / "pa.nii.gz"
    code = (
        "import sys\n"
        "from scripts.__main__ import _commands\n"
        f"_commands(['drr'])['drr']({str(ct)!r}, output={str(out)!r}, backend='itk')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert nib.load(str(out)).shape == (320, 320, 1)


def test_c_order_false_gives_the_same_volume_in_itk_order(tmp_path):
    ct = _nifti(tmp_path)
    a, aff_a, meta_a = load_ct_array(ct)
    b, aff_b, meta_b = load_ct_array(ct, c_order=False)
    assert a.flags.c_contiguous and b.flags.f_contiguous and not b.flags.c_contiguous  # ITK's (z, y, x) buffer
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(aff_a, aff_b)
    assert b.dtype == np.float32 and meta_a["case_id"] == meta_b["case_id"]


@pytest.mark.parametrize("order", ["C", "F"])
def test_hu_to_attenuation_values_and_memory_order(order):
    rng = np.random.default_rng(1)
    hu = np.asarray(rng.normal(-300, 700, (30, 20, 10)), dtype=np.float32, order=order)
    hu.flat[:4] = [-800.0, -799.5, -1000.0, 3000.0]
    mu = hu_to_attenuation(hu)
    # plastimatch's rule, written out: mu_w * (1 + HU / 1000) in float32 where HU > -800, else 0
    ref = np.where(hu > -800, np.float32(0.022) * (np.float32(1) + hu / np.float32(1000)), np.float32(0))
    np.testing.assert_array_equal(mu, ref)
    assert mu.dtype == np.float32 and mu.flags[f"{order}_CONTIGUOUS"]
    assert float(hu_to_attenuation(np.float32(-700.0))) == pytest.approx(0.0066)


def test_itk_helpers_round_trip_without_itk_templates():
    d = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.5]])
    np.testing.assert_array_equal(matrix_to_array(array_to_matrix(d)), d)
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (Z, Y, X)
    image = array_image_view(a)
    assert [int(s) for s in image.GetBufferedRegion().GetSize()] == [4, 3, 2]
    np.testing.assert_array_equal(image_array_view(image), a)
    with pytest.raises(ValueError, match="C-contiguous"):
        array_image_view(np.asfortranarray(a))
    assert itk_class("itkNoSuchModulePython", "itkNoSuch", lambda: "lazy") == "lazy"  # another ITK layout
