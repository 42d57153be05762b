"""Checkpoint handlers: ``latest.pt`` written atomically with its sidecar, and the sidecar of MONAI's
``CheckpointSaver`` files (``model.pt``), so every checkpoint says which network it holds
(:mod:`scripts.networks.checkpoint`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from scripts.networks.checkpoint import write_info
from scripts.utils.atomic import atomic_write_bytes
from scripts.utils.shards import is_rank0

__all__ = ["LatestCheckpoint", "CheckpointInfo"]

logger = logging.getLogger(__name__)


class LatestCheckpoint:
    """Save ``save_dict`` (objects with ``state_dict``) to ``<save_dir>/<filename>`` at each epoch end.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a broken
    ``latest.pt``; its sidecar ``latest.json`` records ``info`` (``model_preset``, ``geometry_preset``,
    ``model_overrides``, ``run``, ...; see :mod:`scripts.networks.checkpoint`). Only rank 0 writes. Resume with
    MONAI's ``CheckpointLoader`` on the same file.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        filename: str = "latest.pt",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.info = dict(info or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.latest_checkpoint = self  # found there by CleanStop (no reference cycle in the config)

    def __call__(self, engine: Engine) -> None:
        self.save(engine)

    def save(self, engine: Engine) -> None:
        if not is_rank0():
            return
        state = {}
        for k, obj in self.save_dict.items():
            obj = getattr(obj, "module", obj)  # unwrap DistributedDataParallel
            state[k] = obj.state_dict()
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        if self.info:
            _write_sidecar(self.path, self.info, epoch=int(engine.state.epoch), iteration=int(engine.state.iteration))
        logger.info("saved %s (epoch %d, iteration %d)", self.path, engine.state.epoch, engine.state.iteration)


def _write_sidecar(path: Path, info: Mapping[str, Any], **extra: Any) -> None:
    info = dict(info)
    write_info(
        path,
        model_preset=info.pop("model_preset"),
        geometry_preset=info.pop("geometry_preset"),
        model_overrides=info.pop("model_overrides", None),
        **{**info, **extra},
    )


class CheckpointInfo:
    """Write the sidecar (:func:`scripts.networks.checkpoint.write_info`) of checkpoints another handler saves.

    Attach after MONAI's ``CheckpointSaver`` on the same engine: at each epoch end, every file of
    ``filenames`` in ``save_dir`` that changed since the last look gets ``<name>.json`` with ``info``.
    """

    def __init__(self, save_dir: str, info: Mapping[str, Any], filenames: Sequence[str] = ("model.pt",)) -> None:
        self.paths = [Path(save_dir) / f for f in filenames]
        self.info = dict(info)
        self._seen: dict[Path, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        for path in self.paths:
            if path.is_file() and self._seen.get(path) != path.stat().st_mtime:
                _write_sidecar(path, self.info, source="training")
                self._seen[path] = path.stat().st_mtime
