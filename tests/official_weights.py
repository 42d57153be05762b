"""Deterministic random weights in the official PerX2CT checkpoint format (test helper).

This bundle's own implementation of the "Weight rule" of the official-code oracle (tests/data/official/README.md):
the oracle's expected outputs were made by the official code with weights that follow this rule, so weights
generated here, imported with ``scripts.networks.import_official`` and run through the bundle's network must reproduce them.

Rule, per entry of a keys TSV (``key<TAB>shape<TAB>dtype``, shape a JSON list):

* each key has its own ``torch.Generator`` seeded with ``(crc32(key) + 0x9E3779B9 * seed) mod 2^32``;
* values are drawn in float64 and cast to the entry's dtype;
* ``*.weight`` with >= 2 dims (and > 0 values): N(0, 1 / fan_in), fan_in = prod(shape[1:]);
  ``*.bias`` beside such a weight: N(0, 0.02^2);
* ``*.weight`` with 1 dim (BatchNorm / GroupNorm): U(0.8, 1.2); ``*.bias`` beside it: N(0, 0.05^2);
* ``running_mean``: N(0, 0.05^2); ``running_var``: U(0.8, 1.2); ``num_batches_tracked``: 0;
* anything else (the empty ``encoder.axis_emb.weight``, LPIPS scaling buffers): zeros.

:func:`state_digest` is the oracle's checksum: SHA-256 over, in file order, each key (UTF-8) then its values as
little-endian bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import torch

GOLDEN_RATIO_32 = 0x9E3779B9


def read_keys(tsv: str | Path) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Rows ``(key, shape, dtype)`` of an official keys TSV, in file order."""
    lines = Path(tsv).read_text().splitlines()
    if lines[0].split("\t")[:3] != ["key", "shape", "dtype"]:
        raise ValueError(f"{tsv}: not a keys TSV (header {lines[0]!r})")
    rows = []
    for line in lines[1:]:
        if line.strip():
            key, shape, dtype = line.split("\t")[:3]
            rows.append((key, tuple(int(n) for n in json.loads(shape)), getattr(torch, dtype)))
    return rows


def _draw(kind: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.rand(shape, generator=g, dtype=torch.float64)


def _value(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]], seed: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed((zlib.crc32(key.encode("utf-8")) + GOLDEN_RATIO_32 * seed) % 2**32)
    prefix, _, leaf = key.rpartition(".")
    sibling = shapes.get(f"{prefix}.weight") if leaf == "bias" else None
    if leaf == "weight" and len(shape) >= 2 and math.prod(shape) > 0:
        return _draw("normal", shape, g) / math.sqrt(math.prod(shape[1:]))
    if leaf == "weight" and len(shape) == 1 or leaf == "running_var":
        return 0.8 + 0.4 * _draw("uniform", shape, g)
    if sibling is not None and len(sibling) >= 2:
        return _draw("normal", shape, g) * 0.02
    if (sibling is not None and len(sibling) == 1) or leaf == "running_mean":
        return _draw("normal", shape, g) * 0.05
    return torch.zeros(shape, dtype=torch.float64)


def official_state_dict(tsv: str | Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The official-format state dict of ``tsv`` (``encoder.*``, ``decoder.*``, ``loss.*``) for ``seed``."""
    rows = read_keys(tsv)
    shapes = {k: s for k, s, _ in rows}
    return {key: _value(key, shape, shapes, seed).to(dtype) for key, shape, dtype in rows}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over each key (UTF-8) and its values (little-endian bytes), in order."""
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode("utf-8"))
        a = value.detach().cpu().contiguous().numpy()
        h.update(a.astype(a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


class ModelCheckpoint:
    """Stand-in for PyTorch-Lightning's callback class: Lightning 1.0.8 checkpoints key their ``callbacks`` state by
    the callback's class object, which the importer's weights-only load must tolerate."""
