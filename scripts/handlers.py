"""Ignite handlers of the bundle's workflows (declared in the configs next to MONAI's own).

* :class:`LatestCheckpoint` - ``latest.pt`` (network, optimiser, trainer state, ...) written atomically at
  every epoch end, for resuming with one override.
* :class:`SliceImageSummary` - TensorBoard images of the last training batch: PA, lateral, true and
  predicted slice side by side.
* :class:`ReconstructionReport` - evaluation output: ``metrics.csv`` (a row per case), ``summary.json``
  and a PNG montage per case (axial, coronal, sagittal: truth, prediction, error).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from scripts.atomic import atomic_write_bytes, save_grey_png, to_uint8

__all__ = ["LatestCheckpoint", "SliceImageSummary", "ReconstructionReport", "is_rank0"]

logger = logging.getLogger(__name__)


def is_rank0() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


class LatestCheckpoint:
    """Save ``save_dict`` (objects with ``state_dict``) to ``<save_dir>/<filename>`` at each epoch end.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a broken
    ``latest.pt``. Only rank 0 writes. Resume with MONAI's ``CheckpointLoader`` on the same file.
    """

    def __init__(self, save_dir: str, save_dict: Mapping[str, Any], filename: str = "latest.pt") -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        state = {}
        for k, obj in self.save_dict.items():
            obj = getattr(obj, "module", obj)  # unwrap DistributedDataParallel
            state[k] = obj.state_dict()
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        logger.info("saved %s (epoch %d)", self.path, engine.state.epoch)


class SliceImageSummary:
    """TensorBoard image summary of the trainer's last batch at each epoch end (rank 0).

    Shows, for the first case: PA, lateral, then the first drawn slice's truth and prediction, all
    in one grey row. Needs the trainer's output dict with ``image``, ``label`` and ``pred``
    (``decollate=False``).
    """

    def __init__(self, log_dir: str, tag: str = "train/pa_lateral_true_pred", interval: int = 1) -> None:
        self.log_dir, self.tag, self.interval = log_dir, tag, int(interval)
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        out = engine.state.output
        if not isinstance(out, Mapping) or not all(k in out for k in ("image", "label", "pred")):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        image = out["image"][0].detach().float().cpu().numpy()  # (2, H, W)
        true = out["label"][0, 0].detach().float().cpu().numpy()
        pred = out["pred"][0, 0].detach().float().cpu().numpy()
        tiles = [to_uint8(image[0]), to_uint8(image[1]), to_uint8(true), to_uint8(pred)]
        h = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0))) for t in tiles]
        row = np.concatenate(tiles, axis=1)
        self._writer.add_image(self.tag, row[None], engine.state.epoch, dataformats="CHW")
        self._writer.flush()


class ReconstructionReport:
    """Per-case metrics, summary and montages of an evaluation run.

    Expects the evaluator's output ``pred`` as (B, A, X, Y, Z): one reconstruction per slicing axis
    (A = 3 for axial, coronal, sagittal as the paper; A = 1 works too) and ``label`` (B, 1, X, Y, Z),
    both in the target scale [0, 1]. Case ids come from the batch's ``case_id`` key.

    Writes ``<output_dir>/metrics.csv`` (one row per case: paper and honest metrics averaged over the
    axes), ``summary.json`` (means and standard deviations) and ``montages/<case_id>.png``.
    """

    def __init__(self, output_dir: str, axes: tuple[str, ...] = ("axial", "coronal", "sagittal"), montage: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.axes = tuple(axes)
        self.montage = montage
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _iteration(self, engine: Engine) -> None:
        from scripts.metrics import evaluate_three_axes

        out, batch = engine.state.output, engine.state.batch
        if isinstance(out, list):  # decollated output: one dict per case
            items = out
        else:
            items = [{"pred": out["pred"][i], "label": out["label"][i]} for i in range(out["pred"].shape[0])]
        ids = batch.get("case_id") if isinstance(batch, Mapping) else None
        for i, item in enumerate(items):
            pred = item["pred"].detach().float().cpu().numpy()  # (A, X, Y, Z)
            label = item["label"].detach().float().cpu().numpy()[0]
            case_id = str(ids[i]) if ids is not None else f"case{len(self.rows):04d}"
            preds = {axis: pred[a] for a, axis in enumerate(self.axes[: pred.shape[0]])}
            metrics = evaluate_three_axes(preds, label)
            self.rows.append({"case_id": case_id, **{k: float(v) for k, v in metrics.items()}})
            logger.info("%s: %s", case_id, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if self.montage:
                self._save_montage(case_id, pred.mean(axis=0), label)

    def _save_montage(self, case_id: str, pred: np.ndarray, label: np.ndarray) -> None:
        from scripts.inference import display_planes

        # one row per plane (axial, coronal, sagittal): truth, prediction, |error| (0..0.2 = 0..500 HU)
        rows = [
            np.concatenate([to_uint8(t), to_uint8(p), to_uint8(np.abs(p - t), 0, 0.2)], axis=1)
            for t, p in zip(display_planes(label), display_planes(pred))
        ]
        save_grey_png(np.concatenate(rows, axis=0), self.output_dir / "montages" / f"{case_id}.png")

    def _complete(self, engine: Engine) -> None:
        if not self.rows:
            logger.warning("evaluation saw no case: nothing written to %s", self.output_dir)
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        keys = list(self.rows[0])
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.output_dir / "metrics.csv", buf.getvalue().encode())
        summary: dict[str, Any] = {"cases": len(self.rows), "axes": list(self.axes)}
        for k in keys[1:]:
            vals = np.array([r[k] for r in self.rows], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            summary[k] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std()) if finite.size else math.nan,
            }
        atomic_write_bytes(self.output_dir / "summary.json", json.dumps(summary, indent=2).encode())
        engine.state.metrics.update({k: summary[k]["mean"] for k in keys[1:]})
        logger.info("evaluation of %d cases written to %s", len(self.rows), self.output_dir)
