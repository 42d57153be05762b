"""The logic the configs no longer carry (issue 22, item 2), tested where it now lives: the example data flag, the
machine-dependent defaults, run length and early stopping as handlers, and inference's dataset checking its inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

REPO = Path(__file__).resolve().parents[1]


def test_an_empty_dataset_dir_is_an_error_unless_download_example(tmp_path):
    from scripts.data.datasets import DatasetError, fetch_example, load_datalist

    empty = tmp_path / "empty"
    empty.mkdir()
    assert fetch_example(str(empty), "false") == str(empty) and not any(empty.iterdir())  # nothing fetched
    with pytest.raises(DatasetError, match="--download_example true"):
        load_datalist(str(empty), download_example=False)
    with pytest.raises(DatasetError, match="does not exist"):
        load_datalist(str(tmp_path / "missing"), download_example=False)
    with pytest.raises(ValueError, match="--download_example must be true or false"):
        fetch_example(str(empty), "maybe")


def test_the_example_data_is_split_by_the_example_split_and_other_data_is_not(example_raw_dir, tmp_path):
    from scripts.data.datasets import example_split, load_datalist

    assert Path(example_split(str(example_raw_dir))).resolve() == REPO / "configs" / "example_split.json"
    lists = load_datalist(str(example_raw_dir), download_example=True)  # present: nothing is downloaded
    split = json.loads((REPO / "configs" / "example_split.json").read_text())
    assert [c["case_id"] for c in lists["training"]] == split["training"]
    other = tmp_path / "mine"
    shutil.copytree(example_raw_dir / "LungDx-A0001", other / "LungDx-A0001")
    assert example_split(str(other)) is None
    assert [c["case_id"] for c in load_datalist(str(other), split=[1, 0, 0])["training"]] == ["LungDx-A0001"]


def test_the_machine_defaults_are_one_table_read_by_reference(bundle_config):
    from scripts.training.defaults import by_machine, learning_rate, preset_reason

    parser = bundle_config("train.json")
    column = "cuda" if torch.cuda.is_available() else "cpu"
    table = parser.config["machine_defaults"]
    for key in ("model_preset", "epochs", "num_workers", "device"):
        assert parser.config[key].replace("::", "#") == f"@machine_defaults#{key}"
        assert parser.get_parsed_content(key) == by_machine(**{k: v for k, v in table[key].items() if k != "_target_"})
    assert parser.get_parsed_content("epochs") == table["epochs"][column]
    assert by_machine(1, 2) == (2 if column == "cuda" else 1)
    assert by_machine(10**6, 10**6, at_most_cpu_count=True) <= (os.cpu_count() or 1)
    assert preset_reason("small", "small").startswith("default for a machine with")
    assert preset_reason("paper", "small").startswith("set by the config files")
    assert learning_rate("small", 20) == 5e-4 and learning_rate("paper", 20) == pytest.approx(9e-5)  # 4.5e-6 x 20


def _trainer_and_validator(losses):
    validator = Engine(lambda e, b: None)
    validator.state.metrics = {}

    def validate(trainer):
        validator.run([0], max_epochs=1)

    @validator.on(Events.EPOCH_COMPLETED)
    def record(engine):
        engine.state.metrics["val_loss"] = losses[min(len(losses), trainer.state.epoch) - 1]

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate)
    return trainer, validator


def test_early_stop_is_off_at_zero_and_stops_after_patience_validations():
    from scripts.handlers import EarlyStop

    trainer, validator = _trainer_and_validator([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    EarlyStop(validator, "val_loss", patience=0).attach(trainer)
    trainer.run([0, 1], max_epochs=6)
    assert trainer.state.epoch == 6
    trainer, validator = _trainer_and_validator([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    EarlyStop(validator, "val_loss", patience=2).attach(trainer)  # lower val_loss is better: best at epoch 2
    trainer.run([0, 1], max_epochs=6)
    assert trainer.state.epoch == 4
    with pytest.raises(ValueError, match="early_stop_patience"):
        EarlyStop(validator, patience=-1)


def test_iteration_budget_sets_whole_epochs():
    from scripts.handlers import IterationBudget

    for iterations, epochs in ((None, 3), (5, 2), (8, 2), (9, 3)):
        engine = Engine(lambda e, b: None)
        IterationBudget(iterations).attach(engine)
        engine.run(list(range(4)), max_epochs=3)
        assert engine.state.max_epochs == epochs and engine.state.iteration == 4 * epochs


def test_inference_dataset_checks_its_inputs(tmp_path):
    """Bad inputs fail when the dataset is built; no input at all when the run starts (require_inputs), so that the
    config parses without inputs (MONAI's property check, tests/test_zoo_layout.py)."""
    from scripts.data.datasets import InferenceDataset

    empty = InferenceDataset()
    assert len(empty) == 0
    with pytest.raises(ValueError, match="missing PA \\(--pa\\) and lateral \\(--lateral\\) image"):
        empty.require_inputs()
    with pytest.raises(FileNotFoundError, match="datalist not found"):
        InferenceDataset(dataset_dir=str(tmp_path))


def test_validation_axes_reach_the_inferer_and_every_validation_metric(bundle_config):
    # --validation_axes "['axial','coronal','sagittal']" validates as the official run did (all three axes)
    axes = ["axial", "coronal", "sagittal"]
    parser = bundle_config("train.json", validation_axes=axes)
    assert parser.get_parsed_content("validate#inferer").axes == [0, 1, 2]
    assert parser.get_parsed_content("validate#metrics#val_loss").axes == [0, 1, 2]
    for name in ("val_psnr", "val_psnr_paper"):
        assert list(parser.get_parsed_content(f"validate#metrics#{name}").metric_fn.axes) == axes
    assert bundle_config("train.json").get_parsed_content("validate#inferer").axes == [0]  # default: axial only
