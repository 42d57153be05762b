"""The error of a CT input: :class:`CTLoadError`.

Every problem with a CT given to the bundle (a missing path, no DICOM, a series that cannot be placed in 3D,
truncated files, NaN values, a CT that cannot be a chest CT) raises :class:`CTLoadError`, whichever module
finds it (:mod:`scripts.ct_io`, :mod:`scripts.dicom_series`, :mod:`scripts.dicom_reader`, :mod:`scripts.lps`,
:mod:`scripts.chest_ct_check`). It is a ``ValueError`` whose message names the path, the problem and the fix;
prepare records it as the reason a case failed (without a traceback: it is the input's fault, not a bug).
"""

from __future__ import annotations

__all__ = ["CTLoadError"]


class CTLoadError(ValueError):
    """A CT could not be found or loaded; the message names the path and the fix."""
