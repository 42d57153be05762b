"""Ctrl-C / SIGTERM during a workflow: save the point reached, one line with the resume command, exit 130."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from scripts.errors import acknowledge, check_stop, listen, stop
from scripts.handlers.checkpoints import LatestCheckpoint
from scripts.utils.command_line import command_line, resume_command
from scripts.utils.shards import is_rank0

__all__ = ["CleanStop"]

logger = logging.getLogger(__name__)

# set on the KeyboardInterrupt that the validation's CleanStop passes up to the trainer's
_PHASE = "perx2ct_phase"


class CleanStop:
    """Ctrl-C or SIGTERM: stop cleanly, saving what can be resumed, in one line, exit status 130.

    * ``role="train"`` (on the trainer, first of its handlers): saves ``latest`` (a :class:`LatestCheckpoint`;
      default: the one attached to the trainer) at the last completed iteration and prints
      ``interrupted at epoch E, iteration I; resume with: <command>``.
    * ``role="validate"`` (on the evaluator inside training): passes the interrupt up to the trainer without
      the traceback MONAI's ``StatsHandler`` would log. The trainer's line then says ``in validation``: the epoch's
      iterations are saved, and the resumed run starts the next epoch (the interrupted epoch is not validated).
    * ``role="evaluate"`` (a standalone evaluation): nothing partial is written (reports are written at the
      end, atomically); prints the case reached and the command to run again.

    On the trainer, an interrupt in its ``COMPLETED`` handlers (the held-out reconstruction) says so: the training
    is complete and saved; resuming runs only what follows it.

    SIGINT and SIGTERM are turned into this interrupt from the engine's start on, wherever the process is
    (:func:`scripts.errors.listen`); after each iteration a stop request whose ``KeyboardInterrupt`` was swallowed
    on the way (:func:`scripts.errors.check_stop`) is acted on.
    """

    _TERMINATING = "Engine run is terminating due to exception"

    def __init__(self, role: str = "train", latest: LatestCheckpoint | None = None) -> None:
        if role not in ("train", "validate", "evaluate"):
            raise ValueError(f"CleanStop role must be 'train', 'validate' or 'evaluate', got {role!r}")
        self.role, self.latest = role, latest
        self._done: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._raised)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)
        engine.add_event_handler(Events.STARTED, self._install)
        # Ignite logs "Engine run is terminating due to exception: " before handing the interrupt over
        engine.logger.addFilter(self._quiet)

    def _quiet(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith(self._TERMINATING) and (msg.rstrip().endswith(":") or msg.endswith(": 130")))

    def _install(self, engine: Engine) -> None:
        self._done = None
        listen()

    def _completed(self, engine: Engine) -> None:
        self._done = engine.state.iteration
        check_stop()

    def _raised(self, engine: Engine, e: BaseException) -> None:
        if not isinstance(e, KeyboardInterrupt):
            raise e
        acknowledge()  # taken: the stop watchdog must not interrupt the save below (scripts.errors.REPEAT_S)
        if self.role == "validate":
            setattr(e, _PHASE, "validation")
            raise e  # the trainer's CleanStop saves and reports
        if self.role == "evaluate":
            total = getattr(engine.state, "epoch_length", None) or "?"
            raise stop(
                f"\ninterrupted at case {self._done or 0}/{total}; nothing was written for the unfinished run; "
                f"run again with: {command_line()}"
            )
        state = engine.state
        if self._done is not None:
            state.iteration = self._done  # the interrupted iteration did not finish: it runs again on resume
        length = state.epoch_length or 1
        epoch = state.iteration // length + 1 if state.iteration % length else max(1, state.iteration // length)
        state.epoch = epoch  # what the saved file's log line and sidecar say, as this line
        if getattr(e, _PHASE, None) == "validation":
            where = f", in validation (resuming starts epoch {epoch + 1}; epoch {epoch} stays unvalidated)"
        elif getattr(engine, "last_event_name", None) == Events.COMPLETED:
            where = ", after training ended (training is saved; resuming runs only what follows it)"
        else:
            where = ""
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
            f"\ninterrupted at epoch {epoch}, iteration {state.iteration}{where}{saved}; "
            f"resume with: {resume_command()}"
        )
