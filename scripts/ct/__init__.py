"""Chest CT input: any source (DICOM series / TCIA trees / file, NIfTI, MHA) as LPS HU.

* :mod:`.loader` - ``load_ct``: one CT from a path, checked and re-oriented.
* :mod:`.dicom_series` - which DICOM series of a folder is the CT (headers only).
* :mod:`.dicom_reader` - one DICOM series read: checks, geometry from the header, pixels.
* :mod:`.chest_check` - whether a CT can be a chest CT (plausibility limits on its header).
* :mod:`.lps` - LPS axis-aligned grids: LPS/RAS affines, re-orienting onto such a grid.
* :mod:`.itk_modules` - ITK classes loaded one wrapper module at a time (fast start of a command), numpy <-> ITK.

Every problem raises :class:`scripts.errors.CTLoadError`.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "ChestCTCheck": "chest_check",
    "lps_affine": "lps",
    "lps_to_ras": "lps",
    "affine_to_lps_grid": "lps",
    "signed_permutation": "lps",
    "to_lps_axis_aligned": "lps",
    "DicomSeries": "dicom_series",
    "find_dicom_series": "dicom_series",
    "select_ct_series": "dicom_series",
    "choose_ct_series": "dicom_series",
    "series_of_file": "dicom_series",
    "instance_number_direction": "dicom_series",
    "series_geometry": "dicom_reader",
    "read_dicom_series": "dicom_reader",
    "load_ct": "loader",
    "load_ct_array": "loader",
    "itk_class": "itk_modules",
    "itk_without_torch": "itk_modules",
    "matrix_to_array": "itk_modules",
    "array_to_matrix": "itk_modules",
    "image_array_view": "itk_modules",
    "array_image_view": "itk_modules",
    "PADDING_THRESHOLD_HU": "loader",
    "AIR_HU": "loader",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
