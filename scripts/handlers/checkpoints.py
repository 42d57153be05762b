"""Checkpoint handlers: ``latest.pt`` written atomically with its sidecar (:class:`LatestCheckpoint`), resuming
from it when ``--resume true`` (:class:`ResumeFromLatest`), the sidecar of MONAI's ``CheckpointSaver`` files
(``model.pt``, :class:`CheckpointInfo`), and the final weights as ``model.pt`` when no validation chose one
(:class:`FinalWeights`), so every checkpoint says which network it holds, with which recipe, and how its weights
were chosen (:mod:`scripts.networks.checkpoint`)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from scripts.networks.checkpoint import check_resume, load_init_checkpoint, read_info, write_info
from scripts.utils.atomic import atomic_write_bytes
from scripts.utils.command_line import flag
from scripts.utils.shards import is_rank0

__all__ = [
    "LatestCheckpoint",
    "InitFromCheckpoint",
    "check_resumable",
    "ResumeFromLatest",
    "CheckpointInfo",
    "FinalWeights",
]

logger = logging.getLogger(__name__)


class LatestCheckpoint:
    """Save ``save_dict`` (objects with ``state_dict``) to ``<save_dir>/<filename>`` at each epoch end.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a broken
    ``latest.pt``; its sidecar ``latest.json`` records ``info`` (``model_preset``, ``geometry_preset``,
    ``model_overrides``, ``run``, ...; see :mod:`scripts.networks.checkpoint`). Only rank 0 writes. With
    ``engine_key`` (``"trainer"``), the engine it is attached to is saved under that key too (so a config lists it
    among the trainer's own handlers without referring to the trainer). :class:`ResumeFromLatest` reads the file.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        filename: str = "latest.pt",
        info: Mapping[str, Any] | None = None,
        engine_key: str | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.info = dict(info or {})
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict.setdefault(self.engine_key, engine)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())
        if self.info:
            _write_sidecar(self.path, self.info, epoch=int(engine.state.epoch), iteration=int(engine.state.iteration))
        logger.info("saved %s (epoch %d, iteration %d)", self.path, engine.state.epoch, engine.state.iteration)


def _write_sidecar(path: Path, info: Mapping[str, Any], **extra: Any) -> None:
    info = dict(info)
    if info.get("run"):
        info["run"] = os.path.abspath(str(info["run"]))  # the run folder, as check_resume compares it
    write_info(
        path,
        model_preset=info.pop("model_preset"),
        geometry_preset=info.pop("geometry_preset"),
        model_overrides=info.pop("model_overrides", None),
        **{**info, **extra},
    )


class InitFromCheckpoint:
    """``--init_ckpt FILE``: start the network from another checkpoint's weights when attached (before training),
    checked by :func:`scripts.networks.checkpoint.load_init_checkpoint` (its sidecar must name this run's preset or
    its legacy form; a geometry change is logged); ``ckpt_path`` empty (the default): does nothing."""

    def __init__(
        self,
        network: torch.nn.Module,
        ckpt_path: str | None,
        model_preset: str,
        geometry_preset: str,
        map_location: Any = "cpu",
    ) -> None:
        self.network, self.ckpt_path = network, ckpt_path
        self.model_preset, self.geometry_preset, self.map_location = model_preset, geometry_preset, map_location

    def attach(self, engine: Engine) -> None:
        load_init_checkpoint(self.network, self.ckpt_path, self.model_preset, self.geometry_preset, self.map_location)


def check_resumable(
    enabled: Any,
    checkpoint_dir: str,
    model_preset: str,
    geometry_preset: str,
    model_overrides: Mapping[str, Any] | None = None,
    run: str | None = None,
    filename: str = "latest.pt",
) -> str | None:
    """With ``enabled`` (``--resume true``): the path of ``<checkpoint_dir>/latest.pt`` after checking that it is a
    readable checkpoint of this run (same network, geometry and run folder;
    :func:`scripts.networks.checkpoint.check_resume`), else one error line. Without: None.

    ``train.json`` calls it in ``initialize`` (``@resume_check``), before anything is built, so that another run's
    ``latest.pt`` is refused at once; :class:`ResumeFromLatest` then loads the file when the trainer starts.
    """
    if not flag(enabled, "resume"):
        return None
    path = Path(checkpoint_dir) / filename
    return check_resume(path, model_preset, geometry_preset, dict(model_overrides or {}), run)


class ResumeFromLatest:
    """``--resume true``: continue the run from ``<checkpoint_dir>/latest.pt`` (network, optimiser, scheduler and the
    trainer's epoch / iteration); ``enabled`` false (the default): does nothing.

    Checks the file first (:func:`check_resumable`: a readable checkpoint of this run, same network, geometry and
    run folder as ``info``; another run's is refused in one line), then loads it with MONAI's ``CheckpointLoader``
    when the trainer starts (``load_dict`` = ``state`` plus the engine it is attached to as ``trainer``; the run's
    ``max_epochs`` is kept).
    """

    def __init__(
        self,
        checkpoint_dir: str,
        state: Mapping[str, Any],
        info: Mapping[str, Any],
        enabled: Any = False,
        filename: str = "latest.pt",
        map_location: Any = None,
    ) -> None:
        self.checkpoint_dir, self.filename = checkpoint_dir, filename
        self.state, self.info = dict(state), dict(info)
        self.enabled = flag(enabled, "resume")
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        path = check_resumable(
            self.enabled,
            self.checkpoint_dir,
            self.info["model_preset"],
            self.info["geometry_preset"],
            self.info.get("model_overrides"),
            self.info.get("run"),
            self.filename,
        )
        if path is None:
            return
        load_dict = {**self.state, "trainer": engine}
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location).attach(engine)
        logger.info("resuming from %s", path)


class CheckpointInfo:
    """Write the sidecar (:func:`scripts.networks.checkpoint.write_info`) of checkpoints another handler saves.

    Attach after MONAI's ``CheckpointSaver`` on the same engine (the validator): at each epoch end, every file of
    ``filenames`` in ``save_dir`` that changed since the last look gets ``<name>.json`` with ``info`` and
    ``selection`` (``"best val_loss 0.1234 at epoch 7"``: the evaluator's key metric, its best value and epoch).
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
                _write_sidecar(path, self.info, source="training", selection=selection(engine))
                self._seen[path] = path.stat().st_mtime


def selection(engine: Engine) -> str:
    """How a validator's best checkpoint was chosen: ``"best <key metric> <value> at epoch <E>"``."""
    s = engine.state
    name = getattr(s, "key_metric_name", None) or "key metric"
    best = getattr(s, "best_metric", None)
    value = f" {float(best):.6g}" if isinstance(best, (int, float)) else ""
    return f"best {name}{value} at epoch {getattr(s, 'best_metric_epoch', '?')}"


class FinalWeights:
    """At the end of training, ``<save_dir>/<filename>`` holds the final weights when no validation chose any.

    Attach to the trainer. When the run completes and ``validator`` never completed a validation in this run
    (no validation cases, or ``val_interval`` beyond the run's length), the network's state dict is written
    atomically as ``model.pt`` (a plain state dict, as ``CheckpointSaver`` writes it) with its sidecar
    (``info`` plus ``selection: "final weights (epoch E, iteration I): no validation ran"``). A ``model.pt`` chosen
    by validation is left as it is. Only rank 0 writes.
    """

    def __init__(
        self,
        save_dir: str,
        network: torch.nn.Module,
        info: Mapping[str, Any],
        validator: Engine | None = None,
        filename: str = "model.pt",
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network, self.info, self.validator = network, dict(info), validator
        self._validated = False

    def attach(self, engine: Engine) -> None:
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._seen_validation)
        engine.add_event_handler(Events.COMPLETED, self)

    def _seen_validation(self, engine: Engine) -> None:
        self._validated = True

    def __call__(self, engine: Engine) -> None:
        if self._validated or not is_rank0():
            return
        previous = read_info(self.path) if self.path.is_file() else None
        if (
            previous
            and previous.get("run") == self.info.get("run")
            and str(previous.get("selection", "")).startswith("best")
        ):
            logger.info("no validation in this part of the run: %s (%s) kept", self.path, previous["selection"])
            return
        net = getattr(self.network, "module", self.network)
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())
        s = engine.state
        how = f"final weights (epoch {s.epoch}, iteration {s.iteration}): no validation ran"
        _write_sidecar(self.path, self.info, source="training", selection=how)
        logger.info("saved %s: %s", self.path, how)
