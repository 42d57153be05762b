"""What a checkpoint says about its training (issue 21, items 1, 2 and 9).

* the sidecar of a quick training records the recipe (loss terms and weights, encoder initialisation, precision,
  geometry, view randomisation) and how its weights were chosen; the run prints the recipe line;
* a ``paper`` run whose pretrained weights are absent and cannot be fetched stops with one line saying how to get
  them, unless ``--allow_fallback_recipe true`` (then the fallback is recorded as accepted);
* fp32 is the default of training, evaluation and inference (``amp`` false and the inferer without autocast, in the
  configs as written, whatever the device);
* a run without validation ends with ``model.pt`` holding the final weights (sidecar ``selection``), and evaluation
  and inference given the training state ``latest.pt`` load its network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import bundle_run, quick_train_args

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_training_records_its_recipe_and_prints_it(quick_run):
    log = quick_run["stdout"] + quick_run["stderr"]
    assert re.search(r"recipe: small / perx2ct: loss 1 x L1 \+ .*; encoder init random; precision fp32", log), log[
        -3000:
    ]
    for name in ("model", "latest"):
        info = json.loads((quick_run["out"] / "models" / f"{name}.json").read_text())
        recipe = info["recipe"]
        assert recipe["model_preset"] == "small" and recipe["geometry_preset"] == "perx2ct"
        assert recipe["precision"] == "fp32"
        assert recipe["encoder_init"] == {"source": "random"}
        assert recipe["view_randomisation"] == {"on_the_fly": False}
        terms = recipe["loss"]["terms"]
        assert terms["l1"] == 1.0 and (terms["lpips"], terms["ssim"]) in ((1.0, 0.0), (0.0, 1.0)), terms
        assert recipe["loss"]["paper_loss"] == (
            terms["lpips"] == 1.0 and recipe["loss"]["lpips_lin_weights"] is not None
        )
        assert recipe["summary"] in log
    selection = json.loads((quick_run["out"] / "models" / "model.json").read_text())["selection"]
    assert re.fullmatch(r"best val_loss [0-9.e-]+ at epoch [12]", selection), selection


def test_a_paper_run_without_its_weights_stops_with_one_line_unless_the_fallback_is_accepted(bundle_config, tmp_path):
    """The decision itself (train.json's ``recipe``), on the paper network and loss as the config builds them from an
    empty ``pretrained_dir`` (the download is switched off: a test fetches nothing from outside PyPI)."""
    from scripts.errors import is_expected, one_line, root_cause
    from scripts.training.recipe import RecipeError, pretrained_file

    empty = tmp_path / "pretrained"
    assert pretrained_file("resnet101", "paper", str(empty), download=False) is None
    assert pretrained_file("resnet101", "small", str(empty)) is None  # small never fetches a ResNet

    def parser(**values):
        p = bundle_config("train.json", model_preset="paper", pretrained_dir=str(empty), **values)
        for name in ("resnet101", "vgg16", "lpips_lin"):
            p[f"pretrained#{name}#download"] = False
        return p

    with pytest.raises(RuntimeError) as failed:  # MONAI wraps what a component raises
        parser().get_parsed_content("recipe")
    stop = root_cause(failed.value)
    assert isinstance(stop, RecipeError) and is_expected(stop)  # the entry points print it as one error line
    line = one_line(stop)
    assert line == str(stop)
    for fragment in (
        "python -m scripts download_weights",
        "--url file://",
        "--encoder_weights",
        "--allow_fallback_recipe",
    ):
        assert fragment in line, line
    recipe = parser(allow_fallback_recipe="true").get_parsed_content("recipe")
    assert recipe["fallback_accepted"] is True and recipe["paper_recipe"] is False
    assert recipe["encoder_init"] == {"source": "random"} and recipe["loss"]["terms"]["ssim"] == 1.0
    assert "FALLBACK" in recipe["summary"]


def test_fp32_is_the_default_of_training_evaluation_and_inference(bundle_config):
    """``amp`` is a literal false in every workflow (not a device-dependent expression: the same on a CUDA machine),
    the evaluators take it, and the inference inferer autocasts nothing (``amp_dtype`` fp32)."""
    train = bundle_config("train.json")
    evaluate = bundle_config("train.json", "evaluate.json")
    inference = bundle_config("inference.json", ckpt_path="", model_preset="small")
    for parser in (train, evaluate, inference):
        assert parser.config["amp"] is False, parser.config["amp"]
    assert train.config["train"]["trainer"]["amp"] == "@amp"
    assert train.config["validate"]["evaluator"]["amp"] == "@amp"
    assert inference.config["evaluator"]["amp"] == "@amp"
    assert inference.get_parsed_content("inferer").amp_dtype is None
    assert evaluate.get_parsed_content("validate#inferer").amp_dtype is None


@pytest.mark.slow
def test_a_run_without_validation_ends_with_the_final_weights_and_latest_pt_is_usable(quick_run, tmp_path):
    out = tmp_path / "noval"
    out.mkdir()
    args = quick_train_args(
        out, quick_run["raw"], "--epochs", "1", "--val_interval", "5", "--held_out_reconstruction", "false"
    )
    bundle_run(*args)
    models = out / "models"
    info = json.loads((models / "model.json").read_text())
    assert info["selection"] == "final weights (epoch 1, iteration 4): no validation ran", info
    final = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    latest = torch.load(models / "latest.pt", map_location="cpu", weights_only=True)
    assert final.keys() == latest["network"].keys()
    assert all(torch.equal(final[k], latest["network"][k]) for k in final)
    # inference given the training state uses its network weights
    case = quick_run["out"] / "held_out" / json.loads((REPO / "configs" / "example_split.json").read_text())["test"][0]
    res = bundle_run(
        "--config_file",
        "configs/inference.json",
        "--pa",
        str(case),
        "--ckpt_path",
        str(models / "latest.pt"),
        "--output_dir",
        str(tmp_path / "inf"),
    )
    assert "latest.pt: recipe small / perx2ct" in res.stdout + res.stderr
    assert len(list((tmp_path / "inf").glob("*.nii.gz"))) == 1
