"""torch for a value that is a torch tensor, without importing torch.

Modules on the path of ``python -m scripts drr --backend itk`` (the geometry, the output frame, the HU -> attenuation
conversion) take numpy arrays or torch tensors but must not import torch themselves (1.2-1.5 s on 2 cores, the
command never needs it). A tensor can only exist once torch is imported, so ``sys.modules`` answers the question.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

__all__ = ["torch_of"]


def torch_of(x: Any) -> ModuleType | None:
    """The ``torch`` module when ``x`` is a torch tensor, else None (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None
