"""Import the authors' published PerX2CT weights (the official code, github.com/dek924/PerX2CT) into this bundle.

Command (``python -m scripts import_official --help``)::

    python -m scripts import_official --ckpt PerX2CT.ckpt --variant perx2ct --output models/model.pt
    python -m scripts import_official --ckpt PerX2CT_global.ckpt --variant perx2ct_global --output models/model.pt

The two checkpoints the official README names (github.com/dek924/PerX2CT @ be4c354, ``README.md:63``):
``PerX2CT.ckpt``, trained with ``configs/PerX2CT.yaml`` (``--variant perx2ct``), and ``PerX2CT_global.ckpt``, trained
with ``configs/PerX2CT_global_w_zoomin.yaml`` (``--variant perx2ct_global``). The README links them from a Google Drive
folder (``README.md:40``: https://drive.google.com/drive/folders/1tx1cvJ2kFtmyvKRpbG29l-qwHBGk9qj0); this bundle never
downloads them. No licence is stated for them (the repository has no LICENSE file; five of its files carry GPLv3
headers inherited from X2CT-GAN): obtain the weights, and the right to use them, from the authors.

reads an official checkpoint (a PyTorch-Lightning file with the weights under ``state_dict``, or a bare
state dict; loaded with ``torch.load(weights_only=True)``, so nothing in it is executed: classes pickled beside
the weights, such as Lightning 1.0's callback keys, are read as inert placeholders) and writes
``models/model.pt`` (a plain state dict of this bundle's network) plus its sidecar ``models/model.json``
(:mod:`scripts.networks.checkpoint`) naming the legacy model preset (``paper_official`` / ``paper_global_official``)
and the official camera (geometry preset ``perx2ct_official``), so inference, evaluation and MONAI Label
run the weights with no extra flags. The state dict also loads into ``paper`` / ``paper_global`` (same keys
and shapes), e.g. to fine-tune in this bundle's own conventions.

Conversion (checked key for key against the official key lists, ``tests/data/official/``):

* ``encoder.network_fn.cond_encoder.model.<name>`` -> ``encoder.<name>`` (torchvision ResNet names);
  the global variant's truncated last layer3 block ``layer3.22.0`` / ``.1`` -> ``layer3.22.conv1`` / ``.bn1``;
* decoder (taming names) -> this bundle's :class:`~scripts.networks.decoder.Decoder`: ``mid.block_1 / attn_1 /
  block_2`` -> ``mid.0 / 1 / 2``; ``up.L.block.b`` -> ``up.(2-L).(b*s)`` and ``up.L.attn.a`` -> ``up.(2-L).(2a+1)``
  (s = 2 at the level with attention, else 1); ``up.L.upsample`` -> ``up.(2-L).(3s)``; ``nin_shortcut`` ->
  ``shortcut``;
* ``decoder.conv_in.weight``: input channels reordered from the official [PE 63 | (global PA 256 | global
  LAT 256 |) PA 512 | LAT 512] to this bundle's [PA | LAT | PE (| global PA | global LAT)];
* ``decoder.conv_out``: of the official 3 output channels only channel 1 is kept (the one the official
  evaluation reads);
* dropped: ``loss.*`` (training-only LPIPS/discriminator) and the empty ``encoder.axis_emb.weight`` (3, 0).
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from scripts.assets.hashing import sha256_file
from scripts.networks.checkpoint import write_info
from scripts.networks.presets import build_perx2ct
from scripts.networks.sampler import PerspectiveSampler
from scripts.projection.geometry import ProjectionGeometry
from scripts.utils.atomic import atomic_write_bytes

__all__ = [
    "VARIANTS",
    "OFFICIAL_GEOMETRY_PRESET",
    "OfficialCheckpointError",
    "convert_state_dict",
    "load_official",
    "import_official",
    "import_official_cli",
]

logger = logging.getLogger(__name__)

#: The official camera (scripts.projection.geometry.GEOMETRY_PRESETS) the weights were trained to sample with.
OFFICIAL_GEOMETRY_PRESET = "perx2ct_official"

#: Official config -> (this bundle's legacy model preset, global features?).
VARIANTS: dict[str, tuple[str, bool]] = {
    "perx2ct": ("paper_official", False),  # configs/PerX2CT.yaml
    "perx2ct_global": ("paper_global_official", True),  # configs/PerX2CT_global_w_zoomin.yaml
}

_ENC = "encoder.network_fn.cond_encoder.model."
_PE, _LOCAL, _GLOBAL = 63, 512, 256  # official per-point channels: PE, per-view local, per-view global


class OfficialCheckpointError(ValueError):
    """The file is not an official PerX2CT checkpoint of the requested variant (the message says why)."""


def _rename(key: str, attn_levels: set[int], n_levels: int) -> str | None:
    """Official key -> this bundle's key; None for keys that are dropped."""
    if key.startswith("loss.") or key == "encoder.axis_emb.weight":
        return None
    if key.startswith(_ENC):
        name = key[len(_ENC) :]
        m = re.match(r"^layer3\.(\d+)\.([01])\.(.+)$", name)  # the truncated block: Sequential(conv1, bn1, relu)
        if m:
            name = f"layer3.{m.group(1)}.{('conv1', 'bn1')[int(m.group(2))]}.{m.group(3)}"
        return "encoder." + name
    if not key.startswith("decoder."):
        raise OfficialCheckpointError(f"unexpected key {key!r}: not a PerX2CT (INRAEZoomModel) checkpoint")
    name = key[len("decoder.") :].replace(".nin_shortcut.", ".shortcut.")
    name = re.sub(r"^mid\.block_1\.", "mid.0.", name)
    name = re.sub(r"^mid\.attn_1\.", "mid.1.", name)
    name = re.sub(r"^mid\.block_2\.", "mid.2.", name)
    m = re.match(r"^up\.(\d+)\.(block|attn|upsample)\.(?:(\d+)\.)?(.+)$", name)
    if m:
        level, kind, idx, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        s = 2 if level in attn_levels else 1
        if kind == "block":
            pos = int(idx) * s
        elif kind == "attn":
            pos = 2 * int(idx) + 1
        else:  # upsample: after the level's 3 blocks (and their attention)
            pos, rest = 3 * s, (f"{idx}." if idx is not None else "") + rest
        name = f"up.{n_levels - 1 - level}.{pos}.{rest}"
    return "decoder." + name


def convert_state_dict(official: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """An official state dict (``encoder.*``, ``decoder.*``, ``loss.*``) -> this bundle's state dict.

    Raises :class:`OfficialCheckpointError` (one line) for a state dict of the other variant or of something
    else (see the module doc for the mapping).
    """
    if variant not in VARIANTS:
        raise OfficialCheckpointError(f"unknown variant {variant!r}; use one of {sorted(VARIANTS)}")
    _, is_global = VARIANTS[variant]
    keys = list(official)
    if "decoder.conv_in.weight" not in official or not any(k.startswith(_ENC) for k in keys):
        raise OfficialCheckpointError(
            "not an official PerX2CT checkpoint: no 'decoder.conv_in.weight' / 'encoder.network_fn.cond_encoder.*' keys"
        )
    has_layer3 = any(k.startswith(_ENC + "layer3.") for k in keys)
    if has_layer3 != is_global:
        other = "perx2ct_global" if has_layer3 else "perx2ct"
        what = (
            "the global variant's keys (encoder layer3)" if has_layer3 else "no global branch (no encoder layer3 keys)"
        )
        raise OfficialCheckpointError(f"the checkpoint holds {what}: use --variant {other} instead of {variant}")
    axis_emb = official.get("encoder.axis_emb.weight")
    if axis_emb is not None and axis_emb.numel() != 0:
        raise OfficialCheckpointError(
            f"encoder.axis_emb.weight has shape {list(axis_emb.shape)}: "
            "axis embeddings (axis_emb_dim > 0) are not supported"
        )
    attn_levels = {int(m.group(1)) for k in keys if (m := re.match(r"^decoder\.up\.(\d+)\.attn\.", k))}
    n_levels = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"^decoder\.up\.(\d+)\.", k)))
    out: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        new = _rename(key, attn_levels, n_levels)
        if new is not None:
            out[new] = value
    w = out["decoder.conv_in.weight"]
    n_global = 2 * _GLOBAL if is_global else 0
    expected = _PE + n_global + 2 * _LOCAL
    if w.ndim != 4 or w.shape[1] != expected:
        raise OfficialCheckpointError(
            f"decoder.conv_in.weight has {w.shape[1] if w.ndim == 4 else list(w.shape)} input channels; variant "
            f"{variant} needs {expected}"
        )
    pe, glob, local = w[:, :_PE], w[:, _PE : _PE + n_global], w[:, _PE + n_global :]
    out["decoder.conv_in.weight"] = torch.cat((local, pe, glob), dim=1).contiguous()
    for name in ("decoder.conv_out.weight", "decoder.conv_out.bias"):
        if out[name].shape[0] != 3:
            raise OfficialCheckpointError(
                f"{name} has {out[name].shape[0]} output channels; the official decoder has 3"
            )
        out[name] = out[name][1:2].clone()  # channel 1: what the official evaluation reads
    return out


class _Placeholder:
    """Stands in for a class pickled beside the weights (e.g. PyTorch-Lightning 1.0's ``ModelCheckpoint``, a key of
    the checkpoint's ``callbacks``): never the real class, so loading executes nothing from the file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _torch_load(p: Path) -> Any:
    """``torch.load(weights_only=True)``; classes other than tensors and containers (Lightning's callback keys) are
    read as :class:`_Placeholder`."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        names = find(p) if find is not None else []
        if not names:
            raise
    logger.info("%s: reading %s as placeholders (only the weights are used)", p, ", ".join(names))
    with torch.serialization.safe_globals([(_Placeholder, name) for name in names]):
        return torch.load(p, map_location="cpu", weights_only=True)


def load_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint: a Lightning file (``{"state_dict": ...}``) or a bare state dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"official checkpoint not found: {p} (the official README links PerX2CT.ckpt / PerX2CT_global.ckpt "
            "from a Google Drive folder; obtain them, and the right to use them, from the authors)"
        )
    try:
        obj = _torch_load(p)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line report
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OfficialCheckpointError(f"{p} is not a readable PyTorch checkpoint ({first[:200]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialCheckpointError(f"{p} holds no state dict (expected a Lightning checkpoint or a dict of tensors)")
    return dict(state)


def _check_loads(state: dict[str, torch.Tensor], preset: str) -> None:
    """Strict load into the legacy preset's network (built on the meta device: shapes and names only)."""

    with torch.device("meta"):
        net = build_perx2ct(preset, PerspectiveSampler(ProjectionGeometry.from_preset(OFFICIAL_GEOMETRY_PRESET)))
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise OfficialCheckpointError(
            f"converted weights do not fit model preset {preset}: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} with another shape (e.g. {wrong[:2]})"
        )


def import_official(ckpt: str | Path, variant: str, output: str | Path = "models/model.pt") -> dict[str, Any]:
    """Convert ``ckpt`` (official, ``variant``) and write ``output`` + its sidecar atomically; returns the sidecar."""
    ckpt = Path(ckpt)
    if variant not in VARIANTS:
        raise OfficialCheckpointError(f"unknown variant {variant!r}; use one of {sorted(VARIANTS)}")
    preset, _ = VARIANTS[variant]
    state = convert_state_dict(load_official(ckpt), variant)
    _check_loads(state, preset)
    buf = io.BytesIO()
    torch.save(state, buf)
    output = Path(output)
    atomic_write_bytes(output, buf.getvalue())
    info = write_info(
        output,
        model_preset=preset,
        geometry_preset=OFFICIAL_GEOMETRY_PRESET,
        source="import_official",
        official_variant=variant,
        official_file=ckpt.name,
        official_sha256=sha256_file(ckpt),
        licence="authors' weights: no licence stated (github.com/dek924/PerX2CT has no LICENSE file); "
        "the right to use them must come from the authors",
    )
    logger.info(
        "wrote %s (%d tensors, model_preset %s, geometry_preset %s)",
        output,
        len(state),
        preset,
        OFFICIAL_GEOMETRY_PRESET,
    )
    return info


def import_official_cli(ckpt: str, variant: str, output: str = "models/model.pt") -> str:
    """Convert the authors' PerX2CT weights (official checkpoint) into this bundle's ``models/model.pt`` + sidecar.

    Args:
        ckpt: the official checkpoint, ``PerX2CT.ckpt`` or ``PerX2CT_global.ckpt`` (linked from the official README;
            no licence stated): a Lightning ``.ckpt`` or a bare state dict.
        variant: ``perx2ct`` for ``PerX2CT.ckpt`` (configs/PerX2CT.yaml) or ``perx2ct_global`` for
            ``PerX2CT_global.ckpt`` (configs/PerX2CT_global_w_zoomin.yaml).
        output: the bundle checkpoint to write (its sidecar ``.json`` goes beside it).

    Returns:
        the output path.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    import_official(ckpt, variant, output)
    return str(output)
