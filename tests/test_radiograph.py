"""Radiograph loading: formats, DICOM photometry and spacing, the pair transform, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scripts.projection.geometry import ProjectionGeometry
from scripts.transforms.radiograph import LoadRadiographsd, RadiographError, load_radiograph


def _rng_image(seed, shape, high, dtype):
    a = np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)
    a[0, 0] = high - 1  # the full-scale level is present: max normalisation is a no-op
    return a


def test_png_8bit_round_trip(tmp_path):
    a = _rng_image(0, (128, 128), 256, np.uint8)
    Image.fromarray(a).save(tmp_path / "pa.png")
    x = load_radiograph(tmp_path / "pa.png", "pa")
    assert x.shape == (1, 128, 128) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), (a / 255.0).astype(np.float32))
    assert x.meta["view"] == "pa"


def test_png_16bit_round_trip(tmp_path):
    a = _rng_image(1, (128, 128), 65536, np.uint16)
    Image.fromarray(a).save(tmp_path / "lat.png")
    x = load_radiograph(tmp_path / "lat.png", "lateral", quantize=False)
    np.testing.assert_allclose(x[0].numpy(), a / 65535.0, atol=1e-6)
    q = load_radiograph(tmp_path / "lat.png", "lateral")  # 8-bit levels like the training PNGs
    np.testing.assert_allclose(q[0].numpy(), np.round(a / 65535.0 * 255) / 255, atol=1e-6)


def test_jpeg_rgb_reads_as_grey(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / "pa.jpg", quality=95)
    x = load_radiograph(tmp_path / "pa.jpg", "pa")  # 256 -> 128 with anti-aliasing
    assert x.shape == (1, 128, 128)
    expect = np.tile(np.linspace(0, 1, 128), (128, 1))
    assert np.abs(x[0].numpy() - expect).mean() < 0.02
    assert x[0, :, -1].mean() > x[0, :, 0].mean() + 0.9  # left dark, right bright: not transposed


def test_nifti_round_trip_orientation(tmp_path):
    img = np.random.default_rng(2).random((40, 64))  # (rows, columns), not square
    img[0, 0] = 1.0
    nib.save(nib.Nifti1Image(img.T.astype(np.float32), np.eye(4)), tmp_path / "pa.nii.gz")  # x = column, y = row
    x = load_radiograph(tmp_path / "pa.nii.gz", "pa", detector_shape=(40, 64), quantize=False)
    np.testing.assert_allclose(x[0].numpy(), img, atol=1e-6)
    nib.save(nib.Nifti1Image(img.T[..., None].astype(np.float32), np.eye(4)), tmp_path / "pa3.nii")  # (X, Y, 1)
    y = load_radiograph(tmp_path / "pa3.nii", "pa", detector_shape=(40, 64), quantize=False)
    np.testing.assert_allclose(y[0].numpy(), img, atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path, dicom_bytes):
    px = np.full((64, 64), 3000, np.uint16)
    px[:, :32] = 100  # low values are bright in MONOCHROME1 (bone)
    (tmp_path / "m1.dcm").write_bytes(dicom_bytes(px, photometric="MONOCHROME1"))
    x = load_radiograph(tmp_path / "m1.dcm", "pa")[0].numpy()
    assert x[:, :60].mean() > 0.99 and x[:, 68:].mean() < 0.01
    (tmp_path / "m2.dcm").write_bytes(dicom_bytes(px, photometric="MONOCHROME2"))
    y = load_radiograph(tmp_path / "m2.dcm", "pa")[0].numpy()
    assert y[:, :60].mean() < 0.01 and y[:, 68:].mean() > 0.99


def test_dicom_imager_pixel_spacing_honoured(tmp_path, dicom_bytes):
    px = np.full((1000, 1000), 4000, np.uint16)  # 250 mm x 250 mm at 0.25 mm
    px[0, 0] = 0
    (tmp_path / "dx.dcm").write_bytes(dicom_bytes(px, ImagerPixelSpacing=[0.25, 0.25]))
    x = load_radiograph(tmp_path / "dx.dcm", "pa", geometry=ProjectionGeometry())[0].numpy()  # 500 mm detector
    assert x.shape == (128, 128)
    assert x[34:94, 34:94].min() > 0.95  # the central half is the image
    assert x[:30].max() == 0 and x[98:].max() == 0 and x[:, :30].max() == 0 and x[:, 98:].max() == 0
    assert abs((x[64] > 0.5).sum() - 64) <= 1 and abs((x[:, 64] > 0.5).sum() - 64) <= 1
    # without spacing the whole image is the whole detector
    (tmp_path / "nospacing.dcm").write_bytes(dicom_bytes(px))
    z = load_radiograph(tmp_path / "nospacing.dcm", "pa")[0].numpy()
    assert z[2:, 2:].min() > 0.95


def test_3d_inputs_rejected(tmp_path, dicom_bytes):
    nib.save(nib.Nifti1Image(np.random.rand(10, 40, 64).astype(np.float32), np.eye(4)), tmp_path / "ct.nii.gz")
    with pytest.raises(
        RadiographError, match=r"is 3D \(shape \(10, 40, 64\)\), a radiograph must be a single 2D image"
    ):
        load_radiograph(tmp_path / "ct.nii.gz", "pa")
    (tmp_path / "mf.dcm").write_bytes(dicom_bytes(np.random.randint(0, 4000, (3, 64, 64)), NumberOfFrames=3))
    with pytest.raises(RadiographError, match=r"mf.dcm is 3D \(shape \(3, 64, 64\)\)"):
        load_radiograph(tmp_path / "mf.dcm", "lateral")
    (tmp_path / "ct.dcm").write_bytes(dicom_bytes(np.random.randint(0, 4000, (64, 64)), modality="CT"))
    with pytest.raises(RadiographError, match="CT slice"):
        load_radiograph(tmp_path / "ct.dcm", "pa")


def test_missing_unreadable_small_constant(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(RadiographError, match=f"lateral image not found: {missing}"):
        load_radiograph(missing, "lateral")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(RadiographError, match="could not be read"):
        load_radiograph(tmp_path / "bad.png", "pa")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(RadiographError, match="constant"):
        load_radiograph(tmp_path / "flat.png", "pa")
    Image.fromarray(_rng_image(3, (16, 16), 256, np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(RadiographError, match="too small"):
        load_radiograph(tmp_path / "tiny.png", "pa")
    assert issubclass(RadiographError, ValueError)


def test_pair_transform(tmp_path):
    a, b = _rng_image(4, (128, 128), 256, np.uint8), _rng_image(5, (256, 256), 256, np.uint8)
    Image.fromarray(a).save(tmp_path / "pa.png")
    Image.fromarray(b).save(tmp_path / "lateral.png")
    t = LoadRadiographsd(keys=("pa", "lateral"), output_key="image")
    out = t({"pa": str(tmp_path / "pa.png"), "lateral": str(tmp_path / "lateral.png"), "case_id": "c1"})
    img = out["image"]
    assert img.shape == (2, 128, 128) and img.dtype == torch.float32
    np.testing.assert_array_equal(img[0].numpy(), (a / 255.0).astype(np.float32))  # channel 0 = PA
    assert out["case_id"] == "c1"
    with pytest.raises(RadiographError, match="lateral view missing"):
        t({"pa": str(tmp_path / "pa.png")})


def test_postprocess_is_shared_by_drr_and_radiographs():
    """The DRR transform's post-processing is the radiograph one (one function, not two pipelines)."""
    from scripts.transforms.drr import DRR
    from scripts.transforms.radiograph import postprocess_radiograph

    raw = np.random.default_rng(7).gamma(2.0, 3.0, size=(320, 320)).astype(np.float32)
    a = DRR(output_shape=(128, 128)).postprocess(raw)
    b = postprocess_radiograph(raw, (128, 128), normalize=True, quantize_bits=8)
    assert a.shape == (1, 128, 128)
    torch.testing.assert_close(a[0], b, rtol=0, atol=0)
    levels = b.numpy() * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # 8-bit levels after the resize


def test_prepared_png_is_the_same_tensor_in_training_and_inference(tmp_path, bundle_config, case_chain):
    """A prepared case's PNGs give bit-identical network input on the training path (train.json's
    ``train#preprocessing`` for a prepared dataset, the whole chain with the case's CT) and on the inference path
    (configs/inference.json's preprocessing), even when the resized DRR's maximum is below 1 (inference must not
    re-normalise a network-ready 8-bit image)."""
    import nibabel as nib
    from scripts.transforms.radiograph import postprocess_radiograph
    from scripts.utils.atomic import save_grey_png

    rng = np.random.default_rng(3)
    views = {}
    for name in ("pa", "lateral"):
        raw = rng.gamma(2.0, 3.0, size=(320, 320)).astype(np.float32)
        raw[100, 100] = raw.max() * 4  # one bright pixel: after the anti-aliased resize the max is < 1
        x = postprocess_radiograph(raw, (128, 128))
        assert float(x.max()) < 1.0
        save_grey_png(x.numpy(), tmp_path / f"{name}.png")
        views[name] = x
    item = {"pa": str(tmp_path / "pa.png"), "lateral": str(tmp_path / "lateral.png"), "case_id": "c1"}
    infer = bundle_config("inference.json").get_parsed_content("preprocessing")(dict(item))["image"]

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "ct.nii.gz")
    train = case_chain("train", "prepared")({**item, "ct": str(tmp_path / "ct.nii.gz")})["image"]
    assert infer.shape == train.shape == (2, 128, 128)
    torch.testing.assert_close(torch.as_tensor(infer), torch.as_tensor(train), rtol=0, atol=0)
    torch.testing.assert_close(torch.as_tensor(train)[0], views["pa"], rtol=0, atol=0)
