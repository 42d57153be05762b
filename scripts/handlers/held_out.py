"""The end of a training run: the held-out case's X-rays ready to try, its reconstruction, and the inference
command to run on it."""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from scripts.handlers.console import format_seconds
from scripts.utils.shards import is_rank0

__all__ = ["HeldOutReconstruction"]

logger = logging.getLogger(__name__)


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
        from scripts.prepare.case_writer import prepare_case

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
        from scripts.inference.items import SaveReconstructiond, inference_items
        from scripts.transforms.radiograph import LoadRadiographsd

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
