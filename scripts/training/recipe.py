"""The recipe a training run really uses, recorded in its checkpoints' sidecars, and the paper's weights it needs.

The ``paper`` presets' recipe initialises the encoder from torchvision's ImageNet ResNet-101 and trains with
L1 + 1.0 x LPIPS-VGG (dek924/PerX2CT @ be4c354: ``x2ct_nerf/modules/image_encoder/resnet.py`` loads
``resnet101(pretrained=True)``; ``x2ct_nerf/modules/losses/vqperceptual.py:78-81`` adds ``perceptual_weight``
1.0 x LPIPS). Without those files a run would start from a random encoder and replace LPIPS by (1 - SSIM)
(:class:`scripts.training.losses.PerX2CTLoss`'s fallback). So:

* :func:`pretrained_file` (``train.json``'s ``pretrained#<name>``) finds each of the three files in ``pretrained_dir``;
  for a ``paper*`` preset it first fetches the missing ones itself, hash-checked
  (:func:`scripts.assets.pretrained.download_weights`, as torchvision's ``pretrained=True`` would), and where the
  machine cannot reach them it goes on without them;
* :func:`training_recipe` (``train.json``'s ``recipe``) describes what the built network and loss really are
  (JSON, written into ``models/model.json`` and ``models/latest.json`` under ``"recipe"``) and, for a ``paper*``
  preset that would train the fallback, stops with one line saying how to get the weights, unless the user
  accepted the fallback (``--allow_fallback_recipe true``: then recorded as accepted);
* :func:`announce` logs the recipe line at the start of the run; evaluation, inference and
  ``python -m bundle verify`` print the sidecar's (:func:`scripts.networks.checkpoint.recipe_line`).

The ``small`` preset (the CPU default) has no ImageNet weights by design and never stops here.

Sidecar ``"recipe"``::

    {"summary": "...one line...",
     "paper_recipe": false,                         # the paper's loss and ImageNet encoder (paper presets only)
     "loss": {"formula": "1 x L1 + 1 x (1 - SSIM)", "terms": {"l1": 1.0, "lpips": 0.0, "ssim": 1.0, "consistency": 0.0},
              "paper_loss": false, "deviations": [...], "lpips_vgg_weights": null, "lpips_lin_weights": null},
     "encoder_init": {"source": "random"},          # or {"source": "imagenet", "file", "sha256"}, or "checkpoint"
     "precision": "fp32",                           # or "amp (float16 autocast on CUDA)"
     "model_preset": "small", "geometry_preset": "perx2ct",
     "view_randomisation": {"on_the_fly": false},   # onthefly.json / clinical.json: true, the setting ("fixed" /
                                                    # "clinical") and its ranges
     "consistency": {"weight": 0.0, ...},           # the re-projection consistency term (train.json consistency)
     "fallback_accepted": false}                    # only for a paper preset trained with the fallback
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from scripts.assets.hashing import sha256_file
from scripts.assets.pretrained import WeightsDownloadError, download_weights, find_weights, weights_path
from scripts.utils.command_line import flag

__all__ = ["RecipeError", "PAPER_WEIGHTS", "is_paper_preset", "pretrained_file", "training_recipe", "announce"]

logger = logging.getLogger(__name__)

#: The files of the paper's recipe (names of :data:`scripts.assets.pretrained.WEIGHTS`).
PAPER_WEIGHTS = ("resnet101", "vgg16", "lpips_lin")
#: The command that fetches them.
DOWNLOAD_COMMAND = "python -m scripts download_weights --name all --output_dir {dir}"


class RecipeError(RuntimeError):
    """A ``paper`` run that would silently train another recipe; the message says how to get the weights."""


def is_paper_preset(model_preset: str | None) -> bool:
    """Whether ``model_preset`` is one of the paper's networks (``paper``, ``paper_global``, their legacy forms)."""
    return str(model_preset or "").startswith("paper")


def pretrained_file(name: str, model_preset: str | None, pretrained_dir: str, download: bool = True) -> str | None:
    """The local file of weights ``name`` (``resnet101``, ``vgg16`` or ``lpips_lin``) in ``pretrained_dir``, or None.

    For a ``paper*`` preset a missing file is first downloaded into ``pretrained_dir`` (hash-checked; with
    ``download``); a download that fails (no network) is logged in one line and None returned:
    :func:`training_recipe` then decides whether the run may go on. Other presets use what is there and fetch
    nothing; ``small`` uses no ResNet (None for ``resnet101``).
    """
    paper = is_paper_preset(model_preset)
    if name == "resnet101" and not paper:
        return None
    found = find_weights(name, pretrained_dir)
    if found is None and paper and download:
        try:
            download_weights(name, pretrained_dir)
        except WeightsDownloadError as e:
            logger.warning("%s: not downloaded (%s)", name, str(e).split(". ")[0])
        found = find_weights(name, pretrained_dir)
    return found


def _file(path: str | None, digest: bool = False) -> dict[str, str] | None:
    if not path:
        return None
    out = {"file": os.path.basename(str(path))}
    if digest and os.path.isfile(path):
        out["sha256"] = sha256_file(path)
    return out


def _encoder_init(network: torch.nn.Module, init_ckpt: str | None) -> dict[str, Any]:
    if init_ckpt:
        return {"source": "checkpoint", **(_file(init_ckpt, digest=True) or {})}
    net = getattr(network, "module", network)
    source = str(getattr(getattr(net, "encoder", None), "weights_source", "random"))
    if source.startswith("imagenet:"):
        return {"source": "imagenet", **(_file(source.split(":", 1)[1], digest=True) or {})}
    return {"source": source}


def _precision(amp: Any, device: Any) -> str:
    if not flag(amp, "amp"):
        return "fp32"
    if torch.device(device).type == "cuda":
        return "amp (float16 autocast on CUDA)"
    return "fp32 (--amp true has no effect without CUDA: MONAI autocasts on CUDA only)"


def training_recipe(
    network: torch.nn.Module,
    loss: Any,
    model_preset: str,
    geometry_preset: str,
    amp: Any = False,
    device: Any = "cpu",
    pretrained_dir: str = "models/pretrained",
    init_ckpt: str | None = None,
    views: Mapping[str, Any] | None = None,
    allow_fallback: Any = False,
    consistency: Any = None,
) -> dict[str, Any]:
    """The recipe of this run (JSON-able, see the module doc), from the built ``network`` and ``loss``.

    Raises :class:`RecipeError` (one line) when ``model_preset`` is a paper preset but the encoder starts from
    random weights or the loss is not the paper's, unless ``allow_fallback`` (``--allow_fallback_recipe true``).
    """
    terms = {
        "l1": float(getattr(loss, "l1_weight", 0.0)),
        "lpips": float(getattr(loss, "lpips_weight", 0.0)) if getattr(loss, "lpips", None) is not None else 0.0,
        "ssim": float(getattr(loss, "ssim_weight", 0.0)),
        "consistency": float(getattr(consistency, "weight", 0.0)),
    }
    described = dict(getattr(loss, "recipe", {}) or {})
    loss_info = {
        "formula": described.get("formula", type(loss).__name__),
        "terms": terms,
        "paper_loss": bool(getattr(loss, "is_paper_loss", False)),
        "deviations": list(described.get("deviations", [])),
        "lpips_vgg_weights": _file(described.get("lpips_vgg_weights")),
        "lpips_lin_weights": _file(described.get("lpips_lin_weights")),
    }
    encoder = _encoder_init(network, init_ckpt)
    paper = is_paper_preset(model_preset)
    paper_recipe = paper and loss_info["paper_loss"] and encoder["source"] != "random"
    recipe: dict[str, Any] = {
        "paper_recipe": bool(paper_recipe),
        "loss": loss_info,
        "encoder_init": encoder,
        "precision": _precision(amp, device),
        "model_preset": str(model_preset),
        "geometry_preset": str(geometry_preset),
        "view_randomisation": (
            {"on_the_fly": True, "setting": "fixed", **dict(views)} if views else {"on_the_fly": False}
        ),
        "consistency": dict(getattr(consistency, "recipe", None) or {"weight": 0.0}),
    }
    if paper and not paper_recipe:
        missing = [
            weights_path(n, pretrained_dir).name for n in PAPER_WEIGHTS if not weights_path(n, pretrained_dir).is_file()
        ]
        if not flag(allow_fallback, "allow_fallback_recipe"):
            raise RecipeError(
                f"model_preset {model_preset!r} trains the paper's recipe (ImageNet ResNet-101 encoder, L1 + LPIPS), "
                f"but {', '.join(missing) or 'its pretrained weights'} could not be found or fetched in "
                f"{pretrained_dir}: get them with `{DOWNLOAD_COMMAND.format(dir=pretrained_dir)}` "
                f"(offline: `--name NAME --url file:///path/to/file`, or copy the files there, or pass "
                f"--encoder_weights FILE --lpips_vgg_weights FILE --lpips_lin_weights FILE), or train the fallback "
                f"recipe (encoder {encoder['source']}, {loss_info['formula']}) with --allow_fallback_recipe true"
            )
        recipe["fallback_accepted"] = True
    recipe["summary"] = _summary(recipe)
    return recipe


def _summary(recipe: Mapping[str, Any]) -> str:
    enc = recipe.get("encoder_init") or {}
    enc_text = str(enc.get("source", "?"))
    if enc.get("file"):
        enc_text += f" {enc['file']}" + (f" (sha256 {enc['sha256'][:12]}...)" if enc.get("sha256") else "")
    views = recipe.get("view_randomisation") or {}
    kind = (
        "the paper's recipe"
        if recipe.get("paper_recipe")
        else ("FALLBACK recipe, accepted with --allow_fallback_recipe" if recipe.get("fallback_accepted") else None)
    )
    if kind is None:
        kind = (
            "not the paper's recipe"
            if is_paper_preset(recipe.get("model_preset"))
            else "preset without ImageNet weights"
        )
    return (
        f"{recipe.get('model_preset')} / {recipe.get('geometry_preset')}: loss {(recipe.get('loss') or {}).get('formula')}; "
        f"encoder init {enc_text}; precision {recipe.get('precision')}; "
        f"views {'on-the-fly ' + str(views.get('setting')) if views.get('on_the_fly') else 'fixed (prepared DRRs)'}; "
        f"re-projection consistency {float((recipe.get('consistency') or {}).get('weight', 0.0)):g} ({kind})"
    )


def announce(recipe: Mapping[str, Any]) -> Mapping[str, Any]:
    """Log ``recipe: <summary>`` (start of a training run; the fallback as a warning) and return ``recipe``."""
    line = f"recipe: {recipe.get('summary') or _summary(recipe)}"
    if recipe.get("fallback_accepted"):
        logger.warning("%s", line)
    else:
        logger.info("%s", line)
    return recipe
