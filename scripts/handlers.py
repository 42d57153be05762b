"""Ignite handlers of the bundle's workflows (declared in the configs next to MONAI's own).

Checkpoints:

* :class:`LatestCheckpoint` - ``latest.pt`` (network, optimiser, trainer state, ...) written atomically at
  every epoch end (and by :class:`CleanStop`), with its sidecar (:func:`scripts.checkpoint.write_info`).
* :class:`CheckpointInfo` - the sidecar of the files MONAI's ``CheckpointSaver`` writes (``model.pt``).

What the console shows:

* :class:`TrainingProgress` - Ignite's progress bar with the running loss and the epoch's ETA.
* :class:`TrainingMonitor` - the start-up block (device, preset and why, cases, epochs, iterations,
  pretrained weights present or not) and, after the first iterations, the estimated time per epoch and run.
* :class:`ValidationProgress` - validation cases and slices as they are reconstructed.
* :class:`CleanStop` - Ctrl-C / SIGTERM: save the point reached, one line with the resume command, exit 130.

Outputs:

* :class:`SliceImageSummary` - TensorBoard images of the last training batch.
* :class:`CaseMetricsLog` - one log line per evaluated case with the metrics the evaluator computed.
* :class:`ReconstructionMontages` - a labelled montage per evaluated case (the metric files are MONAI's
  ``MetricsSaver``'s, named by case id through :func:`case_meta`).
* :class:`HeldOutReconstruction` - at the end of training, the held-out case's X-rays (a prepared case
  folder) and its reconstruction (NIfTI + labelled PNG), with the inference command to try.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from scripts.atomic import atomic_write_bytes, to_uint8
from scripts.checkpoint import write_info
from scripts.errors import stop
from scripts.frame import FRAME

__all__ = [
    "LatestCheckpoint",
    "CheckpointInfo",
    "TrainingProgress",
    "TrainingMonitor",
    "ValidationProgress",
    "CleanStop",
    "SliceImageSummary",
    "CaseMetricsLog",
    "ReconstructionMontages",
    "case_ids",
    "case_meta",
    "HeldOutReconstruction",
    "is_rank0",
    "resume_command",
    "preset_source",
    "format_seconds",
]

logger = logging.getLogger(__name__)


def is_rank0() -> bool:
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def format_seconds(s: float) -> str:
    """``3725.0`` -> ``"1 h 02 min"``, ``75`` -> ``"1 min 15 s"``, ``4.2`` -> ``"4.2 s"``."""
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _command(extra: Mapping[str, str] | None = None) -> str:
    """The command line of this process as a user would type it again, with ``extra`` flags set."""
    argv = list(sys.argv)
    main = argv[0].replace(os.sep, "/")
    if main.endswith("monai/bundle/__main__.py"):
        head = ["-m", "monai.bundle"]
    elif main.endswith("scripts/__main__.py"):
        head = ["-m", "scripts"]
    else:
        head = [argv[0]]
    args = argv[1:]
    for flag, value in (extra or {}).items():
        if flag in args:
            i = args.index(flag)
            args[i + 1 : i + 2] = [value]
        else:
            args += [flag, value]
    exe = sys.executable or "python"
    rel = os.path.relpath(exe) if os.path.isabs(exe) else exe
    exe = rel if not rel.startswith("..") else exe
    return " ".join(_quote(a) for a in [exe, *head, *args])


def _quote(arg: str) -> str:
    """Shell quoting that keeps config lists readable: ``"['a.json','b.json']"`` rather than shlex's ``'['"'"'a...``."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def resume_command() -> str:
    """This training's command with ``--resume true``."""
    return _command({"--resume": "true"})


def preset_source(model_preset: str, device_default: str) -> str:
    """Why ``model_preset`` was chosen: the command line, the config files, or the device's default."""
    if "--model_preset" in sys.argv:
        return "from --model_preset"
    if model_preset == device_default:
        kind = "a CUDA GPU" if torch.cuda.is_available() else "no CUDA GPU"
        other = "small" if model_preset != "small" else "paper"
        return f"default for a machine with {kind}; override with --model_preset {other}"
    return "set by the config files"


# ------------------------------------------------------------------------------------------ checkpoints
class LatestCheckpoint:
    """Save ``save_dict`` (objects with ``state_dict``) to ``<save_dir>/<filename>`` at each epoch end.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a broken
    ``latest.pt``; its sidecar ``latest.json`` records ``info`` (``model_preset``, ``geometry_preset``,
    ``model_overrides``, ``run``, ...; see :mod:`scripts.checkpoint`). Only rank 0 writes. Resume with
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
    """Write the sidecar (:func:`scripts.checkpoint.write_info`) of checkpoints another handler saves.

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


# ------------------------------------------------------------------------------------------ console
class TrainingProgress:
    """Ignite's ``ProgressBar`` on the trainer, showing the running loss (mean of the last ``window``
    iterations) next to tqdm's elapsed / remaining time of the epoch."""

    def __init__(self, window: int = 20, persist: bool = True) -> None:
        self.window = int(window)
        self.persist = persist
        self._losses: list[float] = []

    def _loss(self, output: Any) -> dict[str, float]:
        loss = output.get("loss") if isinstance(output, Mapping) else output
        if loss is None:
            return {}
        self._losses = (self._losses + [float(torch.as_tensor(loss).detach().float().mean())])[-self.window :]
        return {"loss": sum(self._losses) / len(self._losses)}

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=self.persist).attach(engine, output_transform=self._loss)


class TrainingMonitor:
    """The start-up block and the time estimates of a training run (rank 0, through the logger).

    At start: device, model preset and why (``preset_reason``), training / validation cases, epochs,
    iterations per epoch and whether the ImageNet encoder weights and the LPIPS weights are present
    (read from the network's encoder and the loss). After ``warmup + measure`` iterations: the seconds per
    iteration, the estimated time per epoch and for the rest of the run; after the first validation, its
    time and the estimate including validation.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        loss: Any = None,
        device: Any = None,
        model_preset: str = "?",
        preset_reason: str = "",
        train_cases: int = 0,
        val_cases: int = 0,
        val_interval: int = 1,
        validator: Engine | None = None,
        warmup: int = 1,
        measure: int = 2,
    ) -> None:
        self.network, self.loss, self.device = network, loss, device
        self.model_preset, self.preset_reason = model_preset, preset_reason
        self.train_cases, self.val_cases, self.val_interval = (
            int(train_cases),
            int(val_cases),
            max(1, int(val_interval)),
        )
        self.validator = validator
        self.warmup, self.measure = int(warmup), max(1, int(measure))
        self._t0: float | None = None
        self._first: int | None = None
        self._iter_s: float | None = None
        self._val_s: float | None = None
        self._val_t0 = 0.0

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._val_started)
            self.validator.add_event_handler(Events.COMPLETED, self._val_completed)

    def weights_present(self) -> dict[str, bool | None]:
        """``{"imagenet_encoder": ..., "lpips": ...}``: True / False, None when the object does not say.

        The encoder's ``weights_source`` ("random", "imagenet:<file>", "checkpoint") and the loss's
        ``is_paper_loss`` (L1 + calibrated LPIPS as official) answer them."""
        net = getattr(self.network, "module", self.network)
        source = getattr(getattr(net, "encoder", None), "weights_source", None)
        imagenet = None if source is None else str(source) != "random"
        lpips = getattr(self.loss, "is_paper_loss", None)
        return {"imagenet_encoder": imagenet, "lpips": None if lpips is None else bool(lpips)}

    def startup_lines(self, engine: Engine) -> list[str]:
        s = engine.state
        n_params = sum(p.numel() for p in self.network.parameters())
        present = self.weights_present()

        def yes(v: bool | None, what: str) -> str:
            return "unknown" if v is None else ("present" if v else f"absent ({what})")

        device = self.device if self.device is not None else next(self.network.parameters()).device
        if str(device).startswith("cuda") and torch.cuda.is_available():
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        else:
            device = f"{device} ({torch.get_num_threads()} threads)"
        return [
            f"device:              {device}",
            f"model preset:        {self.model_preset} ({n_params / 1e6:.2f} M parameters; {self.preset_reason})",
            f"cases:               {self.train_cases} training, {self.val_cases} validation",
            f"epochs:              {s.max_epochs} (starting at epoch {s.epoch + 1})",
            f"iterations / epoch:  {s.epoch_length}",
            f"ImageNet encoder:    {yes(present['imagenet_encoder'], 'random initialisation: not the paper recipe')}",
            f"LPIPS weights:       {yes(present['lpips'], 'no calibrated LPIPS term: not the paper loss')}",
        ]

    def started(self, engine: Engine) -> None:
        self._t0, self._first = None, None
        if is_rank0():
            logger.info("training run\n  " + "\n  ".join(self.startup_lines(engine)))

    def iteration(self, engine: Engine) -> None:
        if self._first is None:
            self._first = engine.state.iteration
        done = engine.state.iteration - self._first + 1
        if done == self.warmup:
            self._t0 = time.perf_counter()
        elif self._t0 is not None and done == self.warmup + self.measure and is_rank0():
            self._iter_s = (time.perf_counter() - self._t0) / self.measure
            self.log_estimate(engine)

    def estimate(self, engine: Engine) -> tuple[float, float]:
        """(seconds per epoch of training iterations, seconds for the remaining run), validation included once measured."""
        s = engine.state
        per_epoch = (self._iter_s or math.nan) * (s.epoch_length or 0)
        remaining_iters = s.max_epochs * (s.epoch_length or 0) - s.iteration
        remaining_epochs = s.max_epochs - s.epoch + 1
        n_val = math.ceil(remaining_epochs / self.val_interval) if self.val_cases else 0
        return per_epoch, (self._iter_s or math.nan) * remaining_iters + (self._val_s or 0.0) * n_val

    def log_estimate(self, engine: Engine) -> None:
        per_epoch, rest = self.estimate(engine)
        val = "validation not yet timed" if self._val_s is None else f"validation {format_seconds(self._val_s)} each"
        logger.info(
            "estimate: %s / iteration, %s / epoch of training, %s for the rest of the run (%s)",
            format_seconds(self._iter_s or math.nan),
            format_seconds(per_epoch),
            format_seconds(rest),
            val,
        )

    def _val_started(self, engine: Engine) -> None:
        self._val_t0 = time.perf_counter()

    def _val_completed(self, engine: Engine) -> None:
        first = self._val_s is None
        self._val_s = time.perf_counter() - self._val_t0
        trainer = getattr(self, "_trainer", None)
        if first and is_rank0() and self._iter_s is not None and trainer is not None:
            self.log_estimate(trainer)


class ValidationProgress:
    """Show each validation/evaluation case and its slices as they are reconstructed (rank 0).

    A forward hook on the network's decoder counts rendered slices; a tqdm bar per case shows
    ``slices n/total`` (total = volume side x axes of the evaluator's inferer), and a log line per case
    gives its time. Keeps a multi-minute full-volume reconstruction visibly alive.
    """

    def __init__(self, network: torch.nn.Module | None = None, name: str = "validation") -> None:
        self.network, self.name = network, name
        self._bar = None
        self._hook = None
        self._t0 = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._done)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _network(self, engine: Engine) -> Any:
        net = self.network if self.network is not None else getattr(engine, "network", None)
        return getattr(net, "module", net)

    def _start(self, engine: Engine) -> None:
        if not is_rank0():
            return
        from tqdm.auto import tqdm

        net = self._network(engine)
        side = int(getattr(net, "volume_shape", FRAME.shape))
        axes = len(getattr(getattr(engine, "inferer", None), "axes", [0]) or [0])
        batch = engine.state.batch
        ids = batch.get("case_id") if isinstance(batch, Mapping) else None
        n = len(ids) if isinstance(ids, (list, tuple)) else 1
        case = ",".join(str(i) for i in ids) if isinstance(ids, (list, tuple)) else str(ids or "")
        total = getattr(engine.state, "epoch_length", None) or "?"
        self._case = f"{self.name} case {engine.state.iteration}/{total} {case}".strip()
        self._bar = tqdm(
            total=side * axes * n,
            desc=self._case,
            unit="slice",
            leave=False,
            mininterval=1.0,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._t0 = time.perf_counter()
        decoder = getattr(net, "decoder", None)
        if decoder is not None:
            bar = self._bar

            def hook(module, inputs, output):
                bar.update(int(output.shape[0]) if hasattr(output, "shape") else 1)

            self._hook = decoder.register_forward_hook(hook)

    def _done(self, engine: Engine) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            logger.info("%s reconstructed in %s", self._case, format_seconds(time.perf_counter() - self._t0))

    def _close(self, engine: Engine) -> None:
        self._done(engine)


class CleanStop:
    """Ctrl-C or SIGTERM: stop cleanly, saving what can be resumed, in one line, exit status 130.

    * ``role="train"`` (on the trainer, first of its handlers): saves ``latest`` (a :class:`LatestCheckpoint`;
      default: the one attached to the trainer) at the last completed iteration and prints
      ``interrupted at epoch E, iteration I; resume with: <command>``.
    * ``role="validate"`` (on the evaluator inside training): passes the interrupt up to the trainer without
      the traceback MONAI's ``StatsHandler`` would log.
    * ``role="evaluate"`` (a standalone evaluation): nothing partial is written (reports are written at the
      end, atomically); prints the case reached and the command to run again.

    SIGTERM is turned into the same interrupt while the engine runs.
    """

    _TERMINATING = "Engine run is terminating due to exception"

    def __init__(self, role: str = "train", latest: LatestCheckpoint | None = None) -> None:
        if role not in ("train", "validate", "evaluate"):
            raise ValueError(f"CleanStop role must be 'train', 'validate' or 'evaluate', got {role!r}")
        self.role, self.latest = role, latest
        self._done: int | None = None
        self._previous_sigterm: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._raised)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.COMPLETED, self._uninstall)
        # Ignite logs "Engine run is terminating due to exception: " before handing the interrupt over
        engine.logger.addFilter(self._quiet)

    def _quiet(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith(self._TERMINATING) and (msg.rstrip().endswith(":") or msg.endswith(": 130")))

    @staticmethod
    def _sigterm(signum, frame) -> None:
        raise KeyboardInterrupt

    def _install(self, engine: Engine) -> None:
        self._done = None
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._sigterm)
        except ValueError:  # not the main thread (e.g. a MONAI Label worker): leave signals alone
            self._previous_sigterm = None

    def _uninstall(self, engine: Engine) -> None:
        if self._previous_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            except ValueError:
                pass
            self._previous_sigterm = None

    def _completed(self, engine: Engine) -> None:
        self._done = engine.state.iteration

    def _raised(self, engine: Engine, e: BaseException) -> None:
        if not isinstance(e, KeyboardInterrupt):
            raise e
        self._uninstall(engine)
        if self.role == "validate":
            raise e  # the trainer's CleanStop saves and reports
        if self.role == "evaluate":
            total = getattr(engine.state, "epoch_length", None) or "?"
            raise stop(
                f"\ninterrupted at case {self._done or 0}/{total}; nothing was written for the unfinished run; "
                f"run again with: {_command()}"
            )
        state = engine.state
        if self._done is not None:
            state.iteration = self._done  # the interrupted iteration did not finish: it runs again on resume
        length = state.epoch_length or 1
        epoch = state.iteration // length + 1 if state.iteration % length else max(1, state.iteration // length)
        saved = ""
        latest = self.latest or getattr(engine, "latest_checkpoint", None)
        if latest is None:
            saved = " (nothing saved: no LatestCheckpoint attached)"
        elif is_rank0():
            try:
                latest.save(engine)
            except KeyboardInterrupt:  # a second Ctrl-C while saving: the atomic write leaves the old file
                saved = " (not saved: interrupted again while saving)"
        # a newline first: the progress bar's line is still open on the console
        raise stop(
            f"\ninterrupted at epoch {epoch}, iteration {state.iteration}{saved}; resume with: {resume_command()}"
        )


# ------------------------------------------------------------------------------------------ outputs
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

    Shows what the evaluator's metric handlers computed for the iteration's cases
    (``engine.state.case_metrics``, published by :class:`scripts.metrics.CTMetricHandler`); attach it after
    them (a ``SupervisedEvaluator`` registers its metrics before its handlers). At the end, one line with the
    number of cases and ``output_dir``, where ``MetricsSaver`` wrote the CSVs.
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
    ids come from the batch's ``case_id``. Each montage (:func:`scripts.montage.reconstruction_montage`) has
    a row per plane (axial, coronal, sagittal), columns ground truth, prediction, |error| (0-500 HU), and is
    labelled with the case, the HU window and the case's ``metrics`` as the evaluator's metric handlers
    computed them (``engine.state.case_metrics``, see :class:`scripts.metrics.CTMetricHandler`; names the
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
        from scripts.montage import reconstruction_montage

        path = self.output_dir / "montages" / f"{case_id}.png"
        reconstruction_montage(path, {"ground truth": label, "prediction": pred}, case_id, dict(metrics))
        return path


class HeldOutReconstruction:
    """At the end of training (rank 0): the held-out case ready to try, and its reconstruction.

    Takes the first of ``cases`` (the test split, else validation). A raw case is prepared into
    ``held_out_dir/<case_id>`` by the very chain of ``configs/prepare.json`` (``ct.nii.gz``, ``pa.png``,
    ``lateral.png``, ``case.json``: a prepared case); a prepared case is used where it is. Its X-rays are
    then read the way ``configs/inference.json`` reads X-rays, reconstructed by the trained network with the
    weights of ``ckpt_path`` (the best checkpoint, which the printed inference command uses too) when it
    exists, else with the final weights, and
    written to ``output_dir/<case_id>.nii.gz`` (HU) with a labelled ``<case_id>.png`` (ground truth,
    prediction, error, metrics). The paths and the inference command to try are printed.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        cases: Sequence[Mapping[str, Any]],
        output_dir: str,
        held_out_dir: str,
        geometry: Any = None,
        raw_preprocessing: Any = None,
        device: Any = None,
        ckpt_path: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.network, self.cases = network, list(cases or [])
        self.output_dir, self.held_out_dir = Path(output_dir), Path(held_out_dir)
        self.geometry, self.raw_preprocessing = geometry, raw_preprocessing
        self.device, self.ckpt_path, self.enabled = device, ckpt_path, bool(enabled)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def case_folder(self) -> Path | None:
        """The prepared folder of the held-out case (prepared here first when it is a raw CT)."""
        case = self.cases[0]
        if "pa" in case and "lateral" in case:
            return Path(case["pa"]).parent
        from scripts.case_writer import prepare_case

        if self.raw_preprocessing is None:
            raise ValueError(
                "HeldOutReconstruction needs raw_preprocessing (configs/prepare.json#preprocessing) for raw cases"
            )
        r = prepare_case(str(case["case_id"]), str(case["ct"]), self.held_out_dir, self.raw_preprocessing)
        if r.get("status") == "failed":
            logger.warning("held-out case %s could not be prepared: %s", case["case_id"], r.get("reason"))
            return None
        return self.held_out_dir / str(case["case_id"])

    def __call__(self, engine: Engine) -> None:
        if not (self.enabled and self.cases and is_rank0()):
            return
        from scripts.inference import SaveReconstructiond, inference_items
        from scripts.radiograph import LoadRadiographsd

        t0 = time.perf_counter()
        folder = self.case_folder()
        if folder is None:
            return
        item = inference_items(pa=str(folder))[0]
        data = LoadRadiographsd(keys=("pa", "lateral"), output_key="image", geometry=self.geometry)(dict(item))
        import copy

        net = getattr(self.network, "module", self.network)
        device = self.device or next(net.parameters()).device
        weights = "final weights"
        if self.ckpt_path and Path(self.ckpt_path).is_file():
            net = copy.deepcopy(net)
            net.load_state_dict(torch.load(self.ckpt_path, map_location=device, weights_only=True))
            weights = str(_rel(Path(self.ckpt_path)))
        was_training = net.training
        net.eval()
        with torch.no_grad():
            pred = (
                net.reconstruct(torch.as_tensor(data["image"], dtype=torch.float32)[None].to(device))[0, 0]
                .float()
                .cpu()
            )
        net.train(was_training)
        label = None
        if (folder / "ct.nii.gz").is_file():
            import nibabel as nib

            label = np.asarray(nib.load(str(folder / "ct.nii.gz")).dataobj, dtype=np.float32)
        out = SaveReconstructiond(keys="pred", output_dir=str(self.output_dir))(
            {**item, "pred": pred[None], "label": label}
        )
        command = shlex.join(
            [
                "python",
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                "configs/inference.json",
                "--pa",
                str(_rel(folder / "pa.png")),
                "--lateral",
                str(_rel(folder / "lateral.png")),
            ]
            + (["--ckpt_path", str(_rel(Path(self.ckpt_path)))] if self.ckpt_path else [])
            + ["--output_dir", "eval/inference"]
        )
        lines = [
            f"held-out case {item['case_id']} (not trained on), reconstructed with {weights} in "
            f"{format_seconds(time.perf_counter() - t0)}:",
            f"  reconstruction: {_rel(Path(out['pred_path']))}",
            f"  preview:        {_rel(Path(out['pred_path'][: -len('.nii.gz')] + '.png'))}",
            f"  its X-rays:     {_rel(folder / 'pa.png')}, {_rel(folder / 'lateral.png')}",
            f"  try inference:  {command}",
        ]
        print("\n".join(lines), flush=True)


def _rel(path: Path) -> Path:
    try:
        rel = Path(os.path.relpath(path))
    except ValueError:
        return path
    return path if str(rel).startswith("..") else rel
