"""Whole-bundle tooling for the PerX2CT MONAI bundle (not part of the bundle archive itself).

Two subpackages:

* :mod:`bundle.tools` - the tooling around the bundle, run as ``python -m bundle <command>``:

  * ``verify``: the MONAI Model Zoo's checks, run locally (:mod:`bundle.tools.verify`);
  * ``package --output DIR``: the bundle archive ``perx2ct_<version>.zip`` that ``monai.bundle download`` /
    ``load`` consume (:mod:`bundle.tools.package`);
  * ``zoo_check [--ckpt_file CKPT] [--url URL]``: the Model Zoo's CI steps on the packaged bundle
    (:mod:`bundle.tools.zoo_checks`);
  * ``lint [--fix]``: the Model Zoo's format gate, run in the zoo's layout, and the project's code checks
    (:mod:`bundle.tools.lint`, :mod:`bundle.tools.code_checks`);
  * ``make_study --pa PA --lateral LAT --output STUDIES/<id>.nii.gz``: one MONAI Label datastore item from two
    radiographs (:mod:`bundle.monailabel_app.lib.study`).

* ``bundle/monailabel_app`` - the MONAI Label app serving reconstruction (see ``docs/monailabel.md``). Its
  :mod:`~bundle.monailabel_app.lib.scripts_path` is the one way the project puts a bundle's ``scripts`` on the
  import path (the tools use it too).
"""

from __future__ import annotations

from pathlib import Path

BUNDLE_NAME = "perx2ct"
REPO_ROOT = Path(__file__).resolve().parents[1]  # the bundle root: configs/, scripts/, docs/, models/
