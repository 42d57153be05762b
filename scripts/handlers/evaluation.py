"""Evaluation outputs beside MONAI's ``MetricsSaver``: case ids for its rows, a log line per case and a labelled
montage per case (ground truth / prediction / error in the three planes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from scripts.evaluation.montage import reconstruction_montage
from scripts.utils.shards import is_rank0

__all__ = ["case_ids", "case_meta", "CaseMetricsLog", "ReconstructionMontages"]

logger = logging.getLogger(__name__)


def case_ids(batch: Any) -> list[str]:
    """The ``case_id`` of every case of an evaluator's batch: a collated dict (``decollate=False``) or the
    list of per-case dicts a decollating evaluator leaves in ``engine.state.batch``."""
    if isinstance(batch, Mapping):
        ids = batch["case_id"]
        return [str(i) for i in ids] if isinstance(ids, (list, tuple)) else [str(ids)]
    return [str(item["case_id"]) for item in batch]


def case_meta(batch: Any) -> list[dict[str, str]]:
    """``batch_transform`` of MONAI's ``MetricsSaver``: each case's id as its ``filename_or_obj``, the column
    ``filename`` of the per-case files ``<metric>_raw.csv``."""
    from monai.utils import ImageMetaKey

    return [{ImageMetaKey.FILENAME_OR_OBJ: c} for c in case_ids(batch)]


class CaseMetricsLog:
    """One log line per evaluated case (rank 0): ``<case_id>: psnr_paper 31.2345, ssim_paper ...``.

    Shows what the evaluator's metric handlers computed for the iteration's cases (``engine.state.case_metrics``,
    published by :class:`scripts.evaluation.metric_handler.CTMetricHandler`); attach it after them (a
    ``SupervisedEvaluator`` registers its metrics before its handlers). At the end, one line with the number of cases
    and ``output_dir``, where ``MetricsSaver`` wrote the CSVs.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        self.output_dir = output_dir
        self._cases = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._cases = 0

    def _iteration(self, engine: Engine) -> None:
        values = getattr(engine.state, "case_metrics", {})
        for i, case_id in enumerate(case_ids(engine.state.batch)):
            self._cases += 1
            if is_rank0():
                logger.info("%s: %s", case_id, ", ".join(f"{k} {v[i]:.4f}" for k, v in values.items()))

    def _completed(self, engine: Engine) -> None:
        if is_rank0():
            where = f"; metrics written to {self.output_dir}" if self.output_dir else ""
            logger.info("evaluated %d case%s%s", self._cases, "" if self._cases == 1 else "s", where)


class ReconstructionMontages:
    """``<output_dir>/montages/<case_id>.png`` for every evaluated case (rank 0).

    Expects the evaluator's output ``pred`` as (B, A, X, Y, Z) (one reconstruction per slicing axis; their
    mean is shown) and ``label`` (B, 1, X, Y, Z), in the target scale [0, 1], collated or decollated; case
    ids come from the batch's ``case_id``. Each montage (:func:`scripts.evaluation.montage.reconstruction_montage`) has
    a row per plane (axial, coronal, sagittal), columns ground truth, prediction, |error| (0-500 HU), and is
    labelled with the case, the HU window and the case's ``metrics`` as the evaluator's metric handlers computed them
    (``engine.state.case_metrics``, see :class:`scripts.evaluation.metric_handler.CTMetricHandler`; names the
    evaluator lacks are left out). Nothing is computed here: attach it after the metrics.
    """

    def __init__(self, output_dir: str, metrics: Sequence[str] = ("psnr", "ssim", "mae_hu")) -> None:
        self.output_dir = Path(output_dir)
        self.metrics = tuple(metrics)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        out = engine.state.output
        if isinstance(out, Mapping):
            out = [{"pred": out["pred"][i], "label": out["label"][i]} for i in range(out["pred"].shape[0])]
        values = getattr(engine.state, "case_metrics", {})
        for i, (case_id, item) in enumerate(zip(case_ids(engine.state.batch), out)):
            pred = item["pred"].detach().float().cpu().numpy()  # (A, X, Y, Z)
            label = item["label"].detach().float().cpu().numpy()[0]
            shown = {k: values[k][i] for k in self.metrics if k in values}
            self.save(case_id, pred.mean(axis=0), label, shown)

    def save(self, case_id: str, pred: np.ndarray, label: np.ndarray, metrics: Mapping[str, float]) -> Path:
        """Write and return ``montages/<case_id>.png`` of one (X, Y, Z) prediction and its ground truth."""
        path = self.output_dir / "montages" / f"{case_id}.png"
        reconstruction_montage(path, {"ground truth": label, "prediction": pred}, case_id, dict(metrics))
        return path
