"""Pieces that let MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` run PerX2CT.

The trainer keeps its own iteration (AMP, gradient accumulation, events). Slice training (the samples come
from :mod:`scripts.slice_sampling`):

* :class:`SliceBatch` (the trainer's ``prepare_batch``): a batch of N independent slice samples ->
  the network's arguments (B = N cases, S = 1 slice each) and the (N, 1, 128, 128) ground truth.
* :class:`SliceInferer` (the trainer's ``inferer``): calls the network and returns (B * S, 1, 128, 128)
  slices, so 2D losses (L1, LPIPS) apply unchanged.

Validation and evaluation: :class:`ReconstructionInferer` (whole volumes along each axis),
:class:`ZoomInferer` (one zoomed region), :class:`SliceLossMetric` (the training loss as a validation metric).
Training start: :func:`load_init_checkpoint` (``--init_ckpt``). Command line: :func:`flag`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.metrics import Metric
from monai.inferers import Inferer

from scripts.slicing import axis_code

__all__ = [
    "SliceBatch",
    "SliceInferer",
    "SliceLossMetric",
    "ReconstructionInferer",
    "ZoomInferer",
    "autocast_dtype",
    "flag",
    "load_init_checkpoint",
    "metric_sign",
    "metric_cmp",
    "split_metrics",
]

logger = logging.getLogger(__name__)


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


class SliceBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: a batch of independent slice samples, ready for the network.

    Takes a collated batch of :class:`scripts.slice_sampling.SliceDataset` items ``{"image": (N, 2, H, W),
    "label": (N, 1, h, w), "slice_axis": (N,), "slice_index": (N,), "zoom_box": (N, 3)}`` and returns
    ``(image, label, (), kwargs)`` with ``kwargs`` = ``slice_axis`` (N, 1) int64, ``slice_index`` (N, 1) float32,
    ``zoom_box`` (N, 1, 3) float32: the network sees B = N cases with S = 1 slice each, so every sample has its
    own X-ray pair and each view's N images are encoded together (the official batch statistics).
    """

    keys = ("image", "label", "slice_axis", "slice_index", "zoom_box")

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ):
        missing = [k for k in self.keys if k not in batchdata]
        if missing:
            raise KeyError(f"a slice batch needs keys {list(self.keys)}; missing {missing} (got {sorted(batchdata)})")

        def to(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.as_tensor(x).to(device=device, dtype=dtype, non_blocking=non_blocking)

        image, label = to(batchdata["image"]), to(batchdata["label"])
        if label.ndim != 4 or image.ndim != 4 or image.shape[0] != label.shape[0]:
            raise ValueError(
                f"need image (N, 2, H, W) and label (N, 1, h, w), got {tuple(image.shape)} and {tuple(label.shape)}"
            )
        n = image.shape[0]
        kw = {
            "slice_axis": to(batchdata["slice_axis"], torch.long).reshape(n, 1),
            "slice_index": to(batchdata["slice_index"], torch.float32).reshape(n, 1),
            "zoom_box": to(batchdata["zoom_box"], torch.float32).reshape(n, 1, 3),
        }
        return image, label, (), kw


class SliceInferer(Inferer):
    """Inferer for slice training: ``network(image, slice_axis=..., slice_index=..., zoom_box=...)``
    returns (B, S, h, w); this reshapes it to (B * S, 1, h, w) to line up with :class:`SliceBatch`'s labels."""

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = network(inputs, *args, **kwargs)
        return out.reshape(-1, 1, *out.shape[-2:])


class SliceLossMetric(Metric):
    """The training loss as a validation metric (the official checkpoint criterion ``val/rec_loss``).

    Fed ``(pred, label)`` volumes (B, 1, X, Y, Z) by a ``SupervisedEvaluator``, it evaluates ``loss_fn`` on the
    axial slices (array dim 2) in chunks of ``batch_size`` slices, with the loss module in eval mode (LPIPS
    dropout off, as the official model in validation) and no gradients, and returns the mean over all slices.
    """

    def __init__(
        self, loss_fn: torch.nn.Module, batch_size: int = 20, output_transform=lambda x: x, device="cpu"
    ) -> None:
        self.loss_fn, self.batch_size = loss_fn, int(batch_size)
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, output) -> None:
        pred, label = output
        pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        p = pred.float().movedim(-1, 1).reshape(-1, 1, *pred.shape[-3:-1])  # (B * Z, 1, X, Y) axial slices
        t = label.float().to(p.device).movedim(-1, 1).reshape(-1, 1, *label.shape[-3:-1])
        was_training = getattr(self.loss_fn, "training", False)
        if hasattr(self.loss_fn, "eval"):
            self.loss_fn.eval()
        try:
            with torch.no_grad():
                for s in range(0, p.shape[0], self.batch_size):
                    m = min(self.batch_size, p.shape[0] - s)
                    self._sum += float(self.loss_fn(p[s : s + m], t[s : s + m])) * m
                    self._count += m
        finally:
            if was_training:
                self.loss_fn.train()

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError("SliceLossMetric: no validation slices were seen")
        total = torch.tensor([self._sum, float(self._count)], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            total = idist.all_reduce(total)
        return float(total[0] / total[1])


#: Validation metrics where lower is better (the checkpoint keeps the lowest).
LOWER_IS_BETTER = ("val_loss", "val_mae_hu")


def metric_sign(name: str) -> int:
    """+1 when a higher ``name`` is better, -1 when lower is better (``val_loss``)."""
    return -1 if name in LOWER_IS_BETTER else 1


def metric_cmp(name: str):
    """``metric_cmp_fn`` of a ``SupervisedEvaluator`` whose key metric is ``name``: is ``current`` better than
    ``best``?"""
    sign = metric_sign(name)
    return lambda current, best: sign * current > sign * best


def split_metrics(metrics: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(key_val_metric, additional_metrics)`` of an evaluator from a dict of metrics and the name of the one
    that selects the checkpoint (``--checkpoint_metric``)."""
    if key not in metrics:
        raise ValueError(f"--checkpoint_metric {key!r} is not a validation metric; choose one of {sorted(metrics)}")
    return {key: metrics[key]}, {k: v for k, v in metrics.items() if k != key}


def _legacy_presets() -> dict[str, str]:
    from scripts.networks import presets

    return dict(getattr(presets, "LEGACY_PRESETS", {}))


def load_init_checkpoint(
    network: torch.nn.Module,
    ckpt_path: str | None,
    model_preset: str,
    geometry_preset: str,
    device: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """Start training from the weights of ``ckpt_path`` (``--init_ckpt``): an imported official checkpoint
    (``python -m scripts import_official``) or a previous run's ``models/model.pt``.

    The file is a plain state dict (or a dict with one of ``model``, ``network``, ``state_dict``); its sidecar
    (:func:`scripts.checkpoint.read_info`) must name the run's ``model_preset``, or its legacy form (an imported
    ``paper_official`` checkpoint may start a ``paper`` run). Two ways to fine-tune imported weights:

    * legacy mode: ``--model_preset paper_official --geometry_preset perx2ct_official`` (the conventions the
      weights were trained with; training continues where the authors stopped);
    * corrected geometry: ``--model_preset paper --geometry_preset perx2ct`` (the same weights in the bundle's
      cone-beam geometry and conventions; logged, and fine-tuning has to adapt them).

    Loading weights into another geometry than theirs is allowed and logged. Returns the sidecar
    (or None without one); does nothing when ``ckpt_path`` is empty.
    """
    if not ckpt_path:
        return None
    from scripts.checkpoint import read_info

    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"--init_ckpt {ckpt_path}: no such file")
    info = read_info(ckpt_path)
    legacy_of = {v: k for k, v in _legacy_presets().items()}  # paper_official -> paper, ...
    if info is not None and info["model_preset"] != model_preset:
        if legacy_of.get(info["model_preset"]) == model_preset:
            logger.warning(
                "--init_ckpt %s holds %r weights (the official code's conventions); this run trains them as %r "
                "(the bundle's positional encoding, slice layout, image orientation and geometry): the first "
                "iterations unlearn the old conventions",
                ckpt_path,
                info["model_preset"],
                model_preset,
            )
        else:
            raise ValueError(
                f"--init_ckpt {ckpt_path} holds a {info['model_preset']!r} network but this run builds "
                f"{model_preset!r}: add --model_preset {info['model_preset']}"
            )
    try:
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - one clear line naming the file
        raise ValueError(f"--init_ckpt {ckpt_path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    for key in ("model", "network", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    net = getattr(network, "module", network)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"--init_ckpt {ckpt_path} does not fit the {model_preset!r} network: {first}") from e
    if info is None:
        logger.warning(
            "--init_ckpt %s has no sidecar (%s): cannot check which network and geometry it was trained " "with",
            ckpt_path,
            os.path.splitext(ckpt_path)[0] + ".json",
        )
    else:
        src_geometry = info["geometry_preset"]
        overrides = info.get("model_overrides") or {}
        if src_geometry != geometry_preset:
            logger.warning(
                "--init_ckpt %s was trained with geometry %r; this run samples with %r: the weights start in a new "
                "geometry and fine-tuning adapts them (pass --geometry_preset %s to keep the original one)",
                ckpt_path,
                src_geometry,
                geometry_preset,
                src_geometry,
            )
        if overrides:
            logger.warning(
                "--init_ckpt %s records model overrides %s; make sure this run builds the network with "
                "the same settings unless changing them is intended",
                ckpt_path,
                overrides,
            )
    logger.info("initialised %s from %s", type(net).__name__, ckpt_path)
    return info


class ReconstructionInferer(Inferer):
    """Whole-volume reconstruction, once per slicing axis (the paper evaluates each test volume three
    times, slicing along each axis). Returns (B, A, X, Y, Z): channel ``a`` is the volume rendered
    slice by slice along ``axes[a]``. The encoder runs once per case for all axes.

    ``amp_dtype``: ``None``/``"fp32"`` (default: full precision) or ``"bf16"`` (``torch.autocast`` in
    bfloat16 on the inputs' device, CPU or CUDA; the output is returned as float32)."""

    def __init__(self, axes: Sequence[str] = ("axial", "coronal", "sagittal"), amp_dtype: str | None = None) -> None:
        self.axes = [axis_code(a) for a in axes]
        if not self.axes:
            raise ValueError("ReconstructionInferer needs at least one axis")
        self.amp_dtype = autocast_dtype(amp_dtype)

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        net = getattr(network, "module", network)  # unwrap DistributedDataParallel
        if self.amp_dtype is None:
            return net.reconstruct(inputs, axes=self.axes)
        with torch.autocast(inputs.device.type, dtype=self.amp_dtype):
            out = net.reconstruct(inputs, axes=self.axes)
        return out.float()


def autocast_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``None``/``"fp32"`` -> None (no autocast); ``"bf16"``/``"bfloat16"`` -> ``torch.bfloat16``."""
    if name is None or isinstance(name, torch.dtype) and name == torch.float32:
        return None
    if isinstance(name, torch.dtype):
        if name != torch.bfloat16:
            raise ValueError(f"amp_dtype must be fp32 or bf16, got {name}")
        return name
    key = str(name).strip().lower()
    if key in ("fp32", "float32", "none", ""):
        return None
    if key in ("bf16", "bfloat16"):
        return torch.bfloat16
    raise ValueError(f"amp_dtype must be 'fp32' or 'bf16', got {name!r}")


class ZoomInferer(Inferer):
    """One region of one slice at the decoder's full resolution (zoom-in): pred (B, 1, 128, 128).

    Args:
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice position along that axis, voxels of the 128 grid.
        box: ``(row0, col0, size)`` of the region in voxels of the 128 grid (see :mod:`scripts.slicing`);
            a box of side 32 renders 4x finer than the volume (0.625 mm pixels).
    """

    def __init__(self, axis: str, index: float, box: Sequence[float]) -> None:
        self.axis = axis_code(axis)
        self.index = float(index)
        self.box = [float(v) for v in box]
        if len(self.box) != 3 or self.box[2] <= 0:
            raise ValueError(f"zoom box must be (row0, col0, size) with size > 0, got {box!r}")

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        b, dev = inputs.shape[0], inputs.device
        axis = torch.full((b, 1), self.axis, dtype=torch.long, device=dev)
        index = torch.full((b, 1), self.index, device=dev)
        box = torch.tensor(self.box, device=dev).expand(b, 1, 3)
        return network(inputs, axis, index, box)  # (B, 1, h, w): S = 1 slice per case
