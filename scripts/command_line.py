"""Command-line values as the workflows receive them: ``python -m monai.bundle run ... --resume true`` passes
flags through ``fire`` as strings."""

from __future__ import annotations

from typing import Any

__all__ = ["flag"]


def flag(value: Any, name: str = "flag") -> bool:
    """A command-line switch as a bool: fire passes ``--resume true`` as the string ``"true"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", "none", ""):
        return False
    raise ValueError(f"--{name} must be true or false, got {value!r}")
