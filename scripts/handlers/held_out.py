"""The end of a training run: the held-out case's X-rays ready to try, its reconstruction by ``configs/inference.json``'s
own chain, and the inference command to run on it."""

from __future__ import annotations

import copy
import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from scripts.evaluation.honest_metrics import mae_hu, psnr_true, ssim_true
from scripts.handlers.console import format_seconds
from scripts.prepare.case_writer import prepare_case
from scripts.utils.shards import is_rank0

__all__ = ["HeldOutReconstruction"]

logger = logging.getLogger(__name__)


class HeldOutReconstruction:
    """At the end of training (rank 0): the held-out case ready to try, and its reconstruction.

    Takes the first of ``cases`` (the test split, else validation). A raw case is prepared into
    ``held_out_dir/<case_id>`` by the very chain of ``configs/prepare.json`` (``ct.nii.gz``, ``pa.png``,
    ``lateral.png``, ``case.json``: a prepared case); a prepared case is used where it is.

    The reconstruction is ``inference_config``'s (``configs/inference.json``) own workflow: its ``preprocessing``,
    ``inferer``, ``postprocessing`` and ``evaluator`` are parsed from that file with only these ids replaced:
    ``network_def`` (the trained network, or a copy of it with the weights of ``ckpt_path``, the best checkpoint,
    which the printed inference command uses too, when that file exists), ``geometry`` (the training run's),
    ``device``, ``pa`` (the prepared case folder, as ``--pa`` gives it), ``output_dir``, and ``handlers`` (none: the
    network already holds its weights). So it writes what ``python -m monai.bundle run --config_file
    configs/inference.json --pa <case>`` writes: ``output_dir/<case_id>.nii.gz`` (HU) and a labelled
    ``<case_id>.png``, here with the case's ground truth added to its item (``label``) so that the preview shows
    ground truth, prediction and error. The honest metrics of the reconstruction
    (:mod:`scripts.evaluation.honest_metrics`), the paths and the inference command to try are printed.

    Size: one handler because preparing the held-out case, running inference.json on it and reporting the result are
    one step the user sees at the end of training; the work itself is inference.json's and the prepare chain's.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        cases: Sequence[Mapping[str, Any]],
        output_dir: str,
        held_out_dir: str,
        geometry: Any,
        inference_config: str,
        raw_preprocessing: Any = None,
        device: Any = None,
        ckpt_path: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.network, self.cases = network, list(cases or [])
        self.output_dir, self.held_out_dir = Path(output_dir), Path(held_out_dir)
        self.geometry, self.inference_config, self.raw_preprocessing = (
            geometry,
            str(inference_config),
            raw_preprocessing,
        )
        self.device, self.ckpt_path, self.enabled = device, ckpt_path, bool(enabled)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def case_folder(self) -> Path | None:
        """The prepared folder of the held-out case (prepared here first when it is a raw CT)."""
        case = self.cases[0]
        if "pa" in case and "lateral" in case:
            return Path(case["pa"]).parent
        if self.raw_preprocessing is None:
            raise ValueError(
                "HeldOutReconstruction needs raw_preprocessing (configs/prepare.json#preprocessing) for raw cases"
            )
        r = prepare_case(str(case["case_id"]), str(case["ct"]), self.held_out_dir, self.raw_preprocessing)
        if r.get("status") == "failed":
            logger.warning("held-out case %s could not be prepared: %s", case["case_id"], r.get("reason"))
            return None
        return self.held_out_dir / str(case["case_id"])

    def trained_network(self) -> tuple[torch.nn.Module, str]:
        """The network to reconstruct with and where its weights come from: a copy of the trained network with
        the best checkpoint's weights when ``ckpt_path`` exists (the training network is left as it is), else
        the trained network itself with its final weights."""
        net = getattr(self.network, "module", self.network)  # unwrap DistributedDataParallel
        if not (self.ckpt_path and Path(self.ckpt_path).is_file()):
            return net, "final weights"
        device = next(net.parameters()).device
        best = copy.deepcopy(net)
        best.load_state_dict(torch.load(self.ckpt_path, map_location=device, weights_only=True))
        return best, str(_rel(Path(self.ckpt_path)))

    def reconstruct(self, folder: Path, network: torch.nn.Module, label: np.ndarray | None) -> dict[str, Any]:
        """Run ``inference_config``'s evaluator on the prepared case ``folder`` with ``network``; ``label``: its
        ground truth (1, X, Y, Z) in the target scale, or None. Returns the case's output: ``case_id``, ``pred``
        (1, X, Y, Z) in the target scale and ``pred_path`` (the NIfTI written)."""
        parser = ConfigParser()
        parser.read_config(self.inference_config)
        device = self.device or next(network.parameters()).device
        overrides = {
            "network_def": network,
            "geometry": self.geometry,
            "device": torch.device(device),
            "pa": str(folder),
            "lateral": None,
            "output_dir": str(self.output_dir),
            "handlers": [],
        }
        for key, value in overrides.items():
            parser[key] = value
        if label is not None:  # the one case's item, as inference.json built it, gets its ground truth
            parser.get_parsed_content("dataset").data[0]["label"] = label
        evaluator = parser.get_parsed_content("evaluator")
        was_training = network.training
        try:
            evaluator.run()
        finally:
            network.train(was_training)
        return {**evaluator.state.batch[0], **evaluator.state.output[0]}  # the case's item and its outputs

    def __call__(self, engine: Engine) -> None:
        if not (self.enabled and self.cases and is_rank0()):
            return
        t0 = time.perf_counter()
        folder = self.case_folder()
        if folder is None:
            return
        label = None
        if (folder / "ct.nii.gz").is_file():  # the prepared case's ground truth, in the target scale
            label = np.asarray(nib.load(str(folder / "ct.nii.gz")).dataobj, dtype=np.float32)[None]
        network, weights = self.trained_network()
        out = self.reconstruct(folder, network, label)
        lines = [
            f"held-out case {out['case_id']} (not trained on), reconstructed with {weights} in "
            f"{format_seconds(time.perf_counter() - t0)}:",
            f"  reconstruction: {_rel(Path(out['pred_path']))}",
            f"  preview:        {_rel(Path(out['pred_path'][: -len('.nii.gz')] + '.png'))}",
            f"  its X-rays:     {_rel(folder / 'pa.png')}, {_rel(folder / 'lateral.png')}",
        ]
        if label is not None:
            lines.append(f"  honest metrics: {_metrics(out['pred'], label)}")
        lines.append(f"  try inference:  {_inference_command(folder, self.ckpt_path)}")
        print("\n".join(lines), flush=True)


def _metrics(pred: Any, label: Any) -> str:
    """PSNR, SSIM and MAE of a (1, X, Y, Z) reconstruction against its ground truth, both in the target scale."""
    return f"PSNR {psnr_true(pred, label):.2f} dB, SSIM {ssim_true(pred, label):.4f}, MAE {mae_hu(pred, label):.1f} HU"


def _inference_command(folder: Path, ckpt_path: str | None) -> str:
    """The ``configs/inference.json`` command that reconstructs the prepared case ``folder`` with ``ckpt_path``."""
    views = ["--pa", str(_rel(folder / "pa.png")), "--lateral", str(_rel(folder / "lateral.png"))]
    ckpt = ["--ckpt_path", str(_rel(Path(ckpt_path)))] if ckpt_path else []
    return shlex.join(
        ["python", "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *views, *ckpt]
        + ["--output_dir", "eval/inference"]
    )


def _rel(path: Path) -> Path:
    try:
        rel = Path(os.path.relpath(path))
    except ValueError:
        return path
    return path if str(rel).startswith("..") else rel
