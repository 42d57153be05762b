"""Ctrl-C / SIGTERM during a workflow: save the point reached, one line with the resume command, exit 130."""

from __future__ import annotations

import logging
import signal
from typing import Any

from ignite.engine import Engine, Events

from scripts.errors import stop
from scripts.handlers.checkpoints import LatestCheckpoint
from scripts.utils.command_line import command_line, resume_command
from scripts.utils.shards import is_rank0

__all__ = ["CleanStop"]

logger = logging.getLogger(__name__)


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
                f"run again with: {command_line()}"
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
