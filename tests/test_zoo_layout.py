"""MONAI's property check of the bundle's workflows, as the Model Zoo's CI calls it (``ci/unit_tests/utils.py``
``check_workflow``: ``initialize()`` then ``check_properties()``), on a checkout without weights.

``check_properties`` parses and instantiates every required property (``network_def``, ``dataset``, ``evaluator``,
``inferer`` for inference; ``trainer``, ``train#dataset``, ``train#inferer`` for training: MONAI
``monai/bundle/workflows.py`` and ``properties.py`` @ d388d1c), so none of them may need a checkpoint to be built.
The checkpoint is required when weights are loaded, at run time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from bundle.monailabel_app.lib.scripts_path import scripts_on_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def keep_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _missing(workflow_type: str, config_file, **overrides) -> list:
    with scripts_on_path(REPO):
        workflow = ConfigWorkflow(
            config_file=config_file,
            workflow_type=workflow_type,
            meta_file=str(REPO / "configs" / "metadata.json"),
            bundle_root=str(REPO),
            **overrides,
        )
        workflow.initialize()
        return workflow.check_properties()


def test_inference_properties_hold_without_weights_or_inputs(tmp_path, keep_logging):
    """The call the issue names: ``ConfigWorkflow(config_file="configs/inference.json", workflow_type="inference")``
    with no checkpoint (``ckpt_path`` names a missing file, whatever ``models/`` holds) and no input images."""
    missing = _missing(
        "inference",
        str(REPO / "configs" / "inference.json"),
        ckpt_path=str(tmp_path / "models" / "model.pt"),
        output_dir=str(tmp_path / "out"),
    )
    assert missing == []


@pytest.mark.slow
def test_train_properties_hold_without_weights(tmp_path, keep_logging, example_raw_dir):
    """``train.json`` on the example CTs with empty checkpoint and output folders (builds the slice cache)."""
    missing = _missing(
        "train",
        str(REPO / "configs" / "train.json"),
        dataset_dir=str(example_raw_dir),
        download_example=False,
        split_file=str(REPO / "configs" / "example_split.json"),
        cache_dir=str(tmp_path / "cache"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "runs"),
    )
    assert missing == []
