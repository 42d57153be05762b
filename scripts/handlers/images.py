"""TensorBoard images of training: the last batch's X-rays, ground-truth slice and prediction."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from ignite.engine import Engine, Events
from scripts.utils.atomic import to_uint8
from scripts.utils.shards import is_rank0

__all__ = ["SliceImageSummary"]

logger = logging.getLogger(__name__)


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
