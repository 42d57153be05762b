"""What the console shows while training and validating: the progress bar with the running loss, the start-up
block and time estimates, and validation progress per case and slice."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from scripts.frame import FRAME
from scripts.training.defaults import preset_reason as why_preset
from scripts.utils.shards import is_rank0

__all__ = ["TrainingProgress", "TrainingMonitor", "ValidationProgress", "format_seconds"]

logger = logging.getLogger(__name__)


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

    Size: the start-up block, the estimates and the validation timing share one run's timing state.

    At start: device, model preset and why (``machine_preset``: the machine's default in train.json's
    ``machine_defaults``, :mod:`scripts.training.defaults`; or set by a flag / config; ``preset_reason`` replaces
    that sentence), training / validation cases,
    epochs, iterations per epoch, whether the ImageNet encoder weights and the LPIPS weights are present (read from
    the network's encoder and the loss) and the recipe line (``recipe``, :mod:`scripts.training.recipe`). After
    ``warmup + measure`` iterations: the seconds per iteration, the estimated time per epoch and for the rest of the
    run; after the first validation, its time and the estimate including validation.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        loss: Any = None,
        device: Any = None,
        model_preset: str = "?",
        machine_preset: str | None = None,
        preset_reason: str | None = None,
        recipe: Mapping[str, Any] | None = None,
        train_cases: int | Sequence[Any] = 0,
        val_cases: int | Sequence[Any] = 0,
        val_interval: int = 1,
        validator: Engine | None = None,
        warmup: int = 1,
        measure: int = 2,
    ) -> None:
        self.network, self.loss, self.device = network, loss, device
        self.model_preset = model_preset
        self.preset_reason = preset_reason or why_preset(model_preset, machine_preset)
        self.recipe = dict(recipe or {})
        self.train_cases, self.val_cases = _count(train_cases), _count(val_cases)
        self.val_interval = max(1, int(val_interval))
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
            f"recipe:              {self.recipe.get('summary', 'not given')}",
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


def _count(cases: int | Sequence[Any]) -> int:
    """A number of cases, given as a number or as the list of cases."""
    return len(cases) if isinstance(cases, Sequence) else int(cases)


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
