"""The reconstruction as a DICOM CT series (:mod:`scripts.inference.dicom_ct_series`): geometry from the NIfTI affine
(RAS -> DICOM LPS), HU through the rescale, the attributes a PACS and a viewer need, and what it refuses.

Geometry is checked the way a viewer computes it (DICOM PS3.3 C.7.6.2.1.1): the patient position of pixel (r, c) of a
slice is ``ImagePositionPatient + c * PixelSpacing[1] * row_cosine + r * PixelSpacing[0] * column_cosine``; it must be
the LPS point that the NIfTI affine gives for the same voxel.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scripts.frame import LPS_TO_RAS
from scripts.inference.dicom_ct_series import ct_series, write_ct_series
from scripts.inference.items import reconstruction_affine

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _sources(study: str = STUDY) -> list[Dataset]:
    out = []
    for view in ("PA", "LL"):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study, "P-001", "Doe^Jane"
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.StudyDate = "19600101", "F", "A42", "20260101"
        ds.ViewPosition = view
        out.append(ds)
    return out


def _roundtrip(ds: Dataset) -> Dataset:
    """Written as a Part 10 file and read back without ``force`` (as a PACS or viewer would)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)  # plain dcmwrite, as dicomweb_client's STOW-RS encoder does
    data = buf.getvalue()
    assert data[128:132] == b"DICM"
    return pydicom.dcmread(io.BytesIO(data))


def _pixel_to_lps(ds: Dataset, r: float, c: float) -> np.ndarray:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return ipp + c * dc * iop[:3] + r * dr * iop[3:]


def _voxel_to_lps(affine_ras: np.ndarray, ijk) -> np.ndarray:
    return (LPS_TO_RAS @ affine_ras @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize(
    "affine",
    [
        reconstruction_affine((12.5, -30.0, 7.25)),  # the project's frame, off-centre isocentre
        # a general orthogonal affine: axes permuted, rotated by 30 degrees, anisotropic, off-origin
        np.array(
            [
                [0.0, np.cos(np.pi / 6) * 0.8, -np.sin(np.pi / 6) * 3.0, 10.3],
                [0.0, np.sin(np.pi / 6) * 0.8, np.cos(np.pi / 6) * 3.0, -4.7],
                [1.2, 0.0, 0.0, 55.0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        ),
    ],
    ids=["frame", "rotated"],
)
def test_geometry_matches_the_affine(affine):
    vol = np.zeros((6, 5, 4), np.float32)
    datasets = [_roundtrip(ds) for ds in ct_series(vol, affine, _sources())]
    assert [int(ds.InstanceNumber) for ds in datasets] == [1, 2, 3, 4]
    for k, ds in enumerate(datasets):
        assert (int(ds.Rows), int(ds.Columns)) == (5, 6)  # rows along array axis 1, columns along axis 0
        for i, j in [(0, 0), (5, 0), (0, 4), (5, 4), (2, 3)]:
            np.testing.assert_allclose(_pixel_to_lps(ds, j, i), _voxel_to_lps(affine, (i, j, k)), atol=1e-9)
        for v in [*ds.ImagePositionPatient, *ds.ImageOrientationPatient, *ds.PixelSpacing]:
            assert len(str(v)) <= 16, v  # DS: 16 characters at most
    normal = np.cross(*np.split(np.array([float(v) for v in datasets[0].ImageOrientationPatient]), 2))
    step = np.array([float(v) for v in datasets[1].ImagePositionPatient]) - np.array(
        [float(v) for v in datasets[0].ImagePositionPatient]
    )
    assert np.isclose(abs(float(np.dot(normal, step))), float(datasets[0].SpacingBetweenSlices))


def test_frame_axes_are_left_posterior_superior():
    """The project's frame: array axes toward L, P, S, so a standard axial orientation [1,0,0,0,1,0], slices from
    inferior to superior, the first voxel at the isocentre minus half the cube (158.75 mm)."""
    ds = ct_series(np.zeros((128, 128, 3), np.float32), reconstruction_affine((0.0, 0.0, 0.0)), _sources())
    assert [float(v) for v in ds[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in ds[0].ImagePositionPatient] == [-158.75, -158.75, -158.75]
    assert [float(v) for v in ds[1].ImagePositionPatient] == [-158.75, -158.75, -156.25]
    assert [float(v) for v in ds[0].PixelSpacing] == [2.5, 2.5]


def test_hu_through_the_rescale():
    rng = np.random.default_rng(0)
    vol = rng.uniform(-1024.0, 1476.0, (16, 12, 3)).astype(np.float32)
    vol[0, 0, 0], vol[1, 0, 0] = -1024.0, 1476.0
    datasets = [_roundtrip(ds) for ds in ct_series(vol, reconstruction_affine(), _sources())]
    back = np.stack([ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets], -1)
    assert np.abs(back - vol).max() <= 0.5 + 1e-6
    assert float(datasets[0].RescaleIntercept) == -1024.0 and float(datasets[0].RescaleSlope) == 1.0
    # values below -1024 HU move the intercept down instead of being clipped
    low = vol.copy()
    low[0, 0, 0] = -2000.4
    ds = _roundtrip(ct_series(low, reconstruction_affine(), _sources())[0])
    assert float(ds.RescaleIntercept) == -2001.0
    assert ds.pixel_array.T[0, 0] + float(ds.RescaleIntercept) == -2000.0


def test_attributes_for_a_pacs(tmp_path):
    sources = _sources()
    datasets = ct_series(np.zeros((8, 8, 4), np.float32), reconstruction_affine(), sources, series_number=77)
    paths = write_ct_series(datasets, tmp_path)
    read = [pydicom.dcmread(p) for p in paths]
    assert len(read) == 4
    ds = read[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert ds.StudyInstanceUID == STUDY and ds.PatientID == "P-001" and str(ds.PatientName) == "Doe^Jane"
    assert ds.PatientBirthDate == "19600101" and ds.AccessionNumber == "A42"
    assert int(ds.SeriesNumber) == 77 and len(ds.SeriesDescription) <= 64
    assert {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence} == {s.SOPInstanceUID for s in sources}
    assert {r.ReferencedSOPClassUID for r in ds.SourceImageSequence} == {sources[0].SOPClassUID}
    assert len({d.SeriesInstanceUID for d in read}) == 1 and len({d.FrameOfReferenceUID for d in read}) == 1
    assert len({d.SOPInstanceUID for d in read}) == 4
    assert ds.SeriesInstanceUID not in {STUDY} and ds.FrameOfReferenceUID != STUDY
    again = ct_series(np.zeros((8, 8, 4), np.float32), reconstruction_affine(), sources)
    assert again[0].SeriesInstanceUID != ds.SeriesInstanceUID  # a new series each time
    assert again[0].FrameOfReferenceUID != ds.FrameOfReferenceUID


def test_refusals():
    with pytest.raises(ValueError, match="one study"):
        ct_series(np.zeros((4, 4, 2)), reconstruction_affine(), _sources() + _sources("1.2.3.4"))
    with pytest.raises(ValueError, match="must be \\(X, Y, Z\\)"):
        ct_series(np.zeros((1, 4, 4, 2)), reconstruction_affine(), _sources())
    sheared = reconstruction_affine().copy()
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="not orthogonal"):
        ct_series(np.zeros((4, 4, 2)), sheared, _sources())
    with pytest.raises(ValueError, match="NaN"):
        ct_series(np.full((4, 4, 2), np.nan), reconstruction_affine(), _sources())
    with pytest.raises(ValueError, match="source radiographs"):
        ct_series(np.zeros((4, 4, 2)), reconstruction_affine(), [])
