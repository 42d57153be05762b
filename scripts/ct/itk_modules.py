"""ITK's wrapped classes loaded one wrapper module at a time, and the numpy <-> ITK conversions that go with them.

Why (ITK 5.4.7, measured on 2 cores for ``python -m scripts drr``): ``itk.ResampleImageFilter`` goes through ITK's
lazy loader (``itk/support/lazy.py``), which loads the whole ITK module holding the class (ITKImageGrid: every filter
in it, the modules it depends on, every template) and, for an IO class, every IO factory: 3.9 s for the ray
caster's classes, about 2.8 s more for the DICOM series reader. Importing a class's own SWIG wrapper module
(``itk.itkResampleImageFilterPython``) loads the shared libraries and the few wrapper modules it needs: 1.1 s for the
ray caster's. :func:`itk_class` does that and falls back to the lazy loader when a wrapper module is not there
(another ITK layout).

Classes loaded this way are not registered as ITK templates, so ITK's helpers that look the template up
(``itk.template``, ``itk.array_from_matrix``, ``itk.array_view_from_image``, ``itk.image_from_array``) do not know
them: use :func:`matrix_to_array`, :func:`array_to_matrix`, :func:`image_array_view` and :func:`array_image_view`.

:func:`itk_without_torch`: ITK's functional filter interfaces (``itk.resample_image_filter(...)``) accept torch
tensors when torch is installed; to do so, every filter wrapper module imports torch when it is loaded
(``itk/support/helpers.py``: ``_HAVE_TORCH`` from the installed distributions, and ``import torch`` in
``accept_array_like_xarray_torch``, which decorates each functional interface). A command that never hands torch
tensors to ITK (``python -m scripts drr --backend itk``) turns that off before loading any filter: 1.2-1.5 s.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import numpy as np

__all__ = ["itk_class", "itk_without_torch", "matrix_to_array", "array_to_matrix", "image_array_view"]
__all__ += ["array_image_view"]


def itk_class(module: str, name: str, lazy: Callable[[], type]) -> type:
    """ITK's wrapped class ``name`` from ``itk.<module>`` (e.g. ``"itkResampleImageFilterPython"``,
    ``"itkResampleImageFilterIF3IF3"``), else ``lazy()`` (the same class through ITK's lazy loader)."""
    try:
        return getattr(importlib.import_module(f"itk.{module}"), name)
    except (ImportError, AttributeError):
        return lazy()


def itk_without_torch() -> bool:
    """Stop ITK's filter wrapper modules loaded from now on from importing torch (see the module docstring).

    Only for a process that never hands torch tensors to ITK's functional interfaces (a command); nothing changes
    when torch is already imported. Returns whether ITK's torch support was turned off."""
    if "torch" in sys.modules:
        return False
    try:
        from itk.support import helpers  # the module whose flag this sets; ITK is imported by the caller's command
    except ImportError:
        return False
    if not hasattr(helpers, "_HAVE_TORCH"):
        return False
    helpers._HAVE_TORCH = False
    return True


def matrix_to_array(matrix) -> np.ndarray:
    """An ITK ``Matrix<double, 3, 3>`` (e.g. ``image.GetDirection()``) as a ``(3, 3)`` float64 array."""
    return np.array([[matrix(i, j) for j in range(3)] for i in range(3)], dtype=np.float64)


def array_to_matrix(array) -> object:
    """A ``(3, 3)`` array as an ITK ``Matrix<double, 3, 3>`` (e.g. for ``SetDirection``)."""
    a = np.asarray(array, dtype=np.float64).reshape(3, 3)
    vnl_type = itk_class("vnl_matrix_fixedPython", "vnl_matrix_fixedD_3_3", lambda: None)
    matrix_type = itk_class("itkMatrixPython", "itkMatrixD33", lambda: None)
    if vnl_type is None or matrix_type is None:
        import itk  # fallback: ITK's own conversion (loads ITKCommon through the lazy loader)

        return itk.matrix_from_array(np.ascontiguousarray(a))
    vnl = vnl_type()
    for i in range(3):
        for j in range(3):
            vnl.put(i, j, float(a[i, j]))
    return matrix_type(vnl)


def _pybuffer():
    import itk

    return itk_class("itkPyBufferPython", "itkPyBufferIF3", lambda: itk.PyBuffer[itk.Image[itk.F, 3]])


def image_array_view(image) -> np.ndarray:
    """``(Z, Y, X)`` float32 numpy view of a 3D float ITK image's buffer (no copy; keep ``image`` alive)."""
    size = [int(s) for s in image.GetBufferedRegion().GetSize()]
    buf = _pybuffer()
    getter = getattr(buf, "_GetArrayViewFromImage", None)
    if getter is None:
        return buf.GetArrayViewFromImage(image)
    return np.asarray(getter(image)).view(np.float32).reshape(size[::-1])


def array_image_view(array_zyx: np.ndarray):
    """A 3D float ITK image viewing a C-contiguous ``(Z, Y, X)`` float32 array (no copy; keep ``array_zyx`` alive):
    size ``(X, Y, Z)``, spacing 1, origin 0, identity direction."""
    a = np.asarray(array_zyx)
    if a.dtype != np.float32 or a.ndim != 3 or not a.flags.c_contiguous:
        raise ValueError(f"need a C-contiguous (Z, Y, X) float32 array, got {a.dtype} {a.shape}")
    return _pybuffer().GetImageViewFromArray(a)
