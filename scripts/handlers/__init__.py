"""Ignite handlers of the bundle's workflows (declared in the configs next to MONAI's own), one module per concern:
``checkpoints``, ``run_length``, ``console``, ``clean_stop``, ``images``, ``evaluation``, ``held_out``. Configs name
them as ``scripts.handlers.<Name>``.

Checkpoints:

* :class:`LatestCheckpoint` - ``latest.pt`` (network, optimiser, trainer state, ...) written atomically at
  every epoch end (and by :class:`CleanStop`), with its sidecar (:func:`scripts.networks.checkpoint.write_info`).
* :class:`ResumeFromLatest` - ``--resume true``: continue from ``latest.pt`` (checked to belong to this run).
* :class:`CheckpointInfo` - the sidecar of the files MONAI's ``CheckpointSaver`` writes (``model.pt``), with how
  the weights were chosen.
* :class:`FinalWeights` - the final weights as ``model.pt`` when no validation chose any.
* :class:`InitFromCheckpoint` - ``--init_ckpt FILE``: start from another checkpoint's weights.

Run length:

* :class:`IterationBudget` - ``--iterations N`` instead of the epochs.
* :class:`EarlyStop` - ``--early_stop_patience N`` (0 = off).

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

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "LatestCheckpoint": "checkpoints",
    "CheckpointInfo": "checkpoints",
    "ResumeFromLatest": "checkpoints",
    "check_resumable": "checkpoints",
    "InitFromCheckpoint": "checkpoints",
    "FinalWeights": "checkpoints",
    "IterationBudget": "run_length",
    "EarlyStop": "run_length",
    "TrainingProgress": "console",
    "TrainingMonitor": "console",
    "ValidationProgress": "console",
    "format_seconds": "console",
    "CleanStop": "clean_stop",
    "SliceImageSummary": "images",
    "CaseMetricsLog": "evaluation",
    "ReconstructionMontages": "evaluation",
    "case_ids": "evaluation",
    "case_meta": "evaluation",
    "HeldOutReconstruction": "held_out",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
