"""Whole-bundle tooling for the PerX2CT MONAI bundle (not part of the bundle archive itself).

* ``python -m bundle verify``: the MONAI Model Zoo's checks, run locally (:mod:`bundle.verify`).
* ``python -m bundle package --output DIR``: the bundle archive ``perx2ct_<version>.zip`` that
  ``monai.bundle download`` / ``load`` consume (:mod:`bundle.package`).
* ``python -m bundle make_study --pa PA --lateral LAT --output STUDIES/<id>.nii.gz``: one MONAI Label
  datastore item from two radiographs (:mod:`bundle.monailabel_app.lib.study`).
* ``python -m bundle zoo_check [--ckpt_file CKPT] [--url URL]``: the Model Zoo's CI steps on the packaged
  bundle (:mod:`bundle.zoo_checks`).
* ``python -m bundle lint [--fix]``: the Model Zoo's format gate on the project (:mod:`bundle.lint`).
* ``bundle/monailabel_app``: the MONAI Label app serving reconstruction (see ``docs/monailabel.md``).
"""

from __future__ import annotations

from pathlib import Path

BUNDLE_NAME = "perx2ct"
REPO_ROOT = Path(__file__).resolve().parents[1]  # the bundle root: configs/, scripts/, docs/, models/
