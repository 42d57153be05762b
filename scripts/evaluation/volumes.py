"""The one way the metric functions read their inputs: a CT volume ``(X, Y, Z)`` from numpy or torch, with
leading channels of 1 dropped, and a checked ``(pred, target)`` pair (used by :mod:`.paper_metrics` and
:mod:`.honest_metrics`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_volume", "volume_pair"]


def as_volume(x: Any, name: str) -> np.ndarray:
    """numpy array (dtype kept) of a 3D volume ``(X, Y, Z)`` from numpy / torch; leading channels of 1 are
    dropped, any other shape is refused naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D volume (X, Y, Z), optionally with one leading channel; got shape {np.shape(x)}"
        )
    return a


def volume_pair(pred: Any, target: Any, clip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(X, Y, Z)`` prediction and target of equal shapes, clipped to [0, 1] when ``clip``."""
    p = as_volume(pred, "pred").astype(np.float64, copy=False)
    t = as_volume(target, "target").astype(np.float64, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if clip:
        p, t = np.clip(p, 0.0, 1.0), np.clip(t, 0.0, 1.0)
    return p, t
