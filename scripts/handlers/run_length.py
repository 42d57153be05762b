"""How long a training run trains, as handlers switched by one number each: ``--iterations N`` (:class:`IterationBudget`:
null = the epochs) and ``--early_stop_patience N`` (:class:`EarlyStop`: 0 = off, N = stop after N validations without
improvement of the checkpoint metric)."""

from __future__ import annotations

import logging
import math

from ignite.engine import Engine, Events
from monai.handlers import EarlyStopHandler
from scripts.training.model_selection import metric_sign

__all__ = ["IterationBudget", "EarlyStop"]

logger = logging.getLogger(__name__)


class IterationBudget:
    """``--iterations N``: train ``ceil(N / epoch_length)`` epochs instead of the configured ``max_epochs`` (whole
    epochs: validation and checkpoints stay at epoch ends); ``iterations`` null or 0: the epochs stand.

    Attach to the trainer before the handlers that read ``max_epochs`` at start (the start-up block, resume).
    """

    def __init__(self, iterations: int | None = None) -> None:
        self.iterations = int(iterations or 0)
        if self.iterations < 0:
            raise ValueError(f"--iterations must be a positive number (or null), got {iterations}")

    def attach(self, engine: Engine) -> None:
        if self.iterations:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        length = int(engine.state.epoch_length or 1)
        engine.state.max_epochs = math.ceil(self.iterations / length)
        logger.info("--iterations %d: %d epochs of %d iterations", self.iterations, engine.state.max_epochs, length)


class EarlyStop:
    """Stop training when ``metric`` (a validation metric, e.g. ``val_loss``) has not improved for ``patience``
    validations; ``patience`` 0 turns it off.

    Attach to the trainer (a config lists it among the trainer's handlers): it puts MONAI's ``EarlyStopHandler``
    on ``validator`` with the trainer to stop, scoring each validation by ``metric`` with its direction
    (:func:`scripts.training.model_selection.metric_sign`: lower ``val_loss`` is better).
    """

    def __init__(self, validator: Engine, metric: str = "val_loss", patience: int = 0) -> None:
        self.validator, self.metric = validator, str(metric)
        self.patience = int(patience)
        if self.patience < 0:
            raise ValueError(f"--early_stop_patience must be 0 (off) or a positive number, got {patience}")

    def score(self, engine: Engine) -> float:
        """The validator's ``metric``, signed so that higher is better."""
        return float(engine.state.metrics[self.metric]) * metric_sign(self.metric)

    def attach(self, engine: Engine) -> None:
        if self.patience == 0:
            return
        handler = EarlyStopHandler(patience=self.patience, score_function=self.score, trainer=engine, epoch_level=True)
        handler.attach(self.validator)
        logger.info("early stopping: after %d validations without a better %s", self.patience, self.metric)
