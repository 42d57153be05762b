"""The training defaults that depend on the machine, in one table of ``configs/train.json``, chosen once and logged.

``train.json``'s ``machine_defaults`` holds one entry per value, each with its ``cpu`` and ``cuda`` column::

    "machine_defaults": {
        "model_preset": {"_target_": "scripts.training.defaults.by_machine", "cpu": "small", "cuda": "paper"},
        "epochs": {"_target_": "scripts.training.defaults.by_machine", "cpu": 10, "cuda": 100},
        ...
    },
    "model_preset": "@machine_defaults#model_preset",
    "epochs": "@machine_defaults#epochs",

A machine with a CUDA GPU takes the ``cuda`` column, any other the ``cpu`` column (:func:`machine`; logged once,
with the reason). A flag (``--epochs 3``) or a merged config (``configs/quick.json``) replaces the value;
``--machine_defaults#epochs#cuda 50`` edits the table itself. :func:`preset_reason` says in the start-up block
why the run trains the preset it trains. The learning rate follows the *preset* (:func:`learning_rate`), not
the machine, so ``--model_preset paper`` on a CPU trains with the paper's rate.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

__all__ = ["machine", "by_machine", "preset_reason", "learning_rate", "PAPER_BASE_LR", "SMALL_LR"]

logger = logging.getLogger(__name__)

#: The official base learning rate per sample and GPU: ``base_learning_rate: 4.5e-6`` (dek924/PerX2CT @ be4c354,
#: configs/PerX2CT.yaml), scaled by ``accumulate_grad_batches * ngpu * batch_size`` (main.py:615).
PAPER_BASE_LR = 4.5e-6
#: The ``small`` preset's learning rate (CPU-sized network, tuned on the example data).
SMALL_LR = 5e-4

_announced: set[str] = set()


def machine() -> tuple[str, str]:
    """``("cuda", "a CUDA GPU")`` when a CUDA GPU is available, else ``("cpu", "no CUDA GPU")``."""
    return ("cuda", "a CUDA GPU") if torch.cuda.is_available() else ("cpu", "no CUDA GPU")


def by_machine(cpu: Any, cuda: Any, at_most_cpu_count: bool = False) -> Any:
    """``cuda`` on a machine with a CUDA GPU, else ``cpu`` (a number at most ``os.cpu_count()`` with
    ``at_most_cpu_count``, e.g. data loader workers). The first call logs which column the run takes and why."""
    name, reason = machine()
    if name not in _announced:
        _announced.add(name)
        logger.info("machine defaults: the %r column of train.json's machine_defaults (%s)", name, reason)
    value = cuda if name == "cuda" else cpu
    return min(int(value), os.cpu_count() or 1) if at_most_cpu_count else value


def preset_reason(model_preset: str, machine_preset: str | None) -> str:
    """Why the run trains ``model_preset``: the machine's default (``machine_preset``, the table's value), or a value
    set by a flag or a merged config file."""
    _, reason = machine()
    if machine_preset is not None and str(model_preset) == str(machine_preset):
        other = "small" if str(model_preset) != "small" else "paper"
        return f"default for a machine with {reason}; override with --model_preset {other}"
    return f"set by the config files or the command line (default for a machine with {reason}: {machine_preset})"


def learning_rate(model_preset: str, batch_size: int) -> float:
    """The preset's learning rate: :data:`SMALL_LR` for ``small``; for the paper presets the official
    ``base_lr * ngpu * batch_size`` (:data:`PAPER_BASE_LR`; ``ngpu`` = the process group's size under torchrun,
    else 1)."""
    if str(model_preset) == "small":
        return SMALL_LR
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return PAPER_BASE_LR * int(batch_size) * world
