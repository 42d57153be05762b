"""Command line of the bundle tooling: ``python -m bundle <command> [--flags]`` (built with ``fire``).

* ``verify``: the Model Zoo's checks, one PASS/FAIL line each; exit status 1 on any failure.
* ``package --output DIR [--ckpt_file model.pt]``: write ``DIR/perx2ct_<version>.zip``.
* ``make_study --pa PA --lateral LATERAL --output STUDIES/<id>.nii.gz``: one MONAI Label study.
* ``zoo_check [--ckpt_file model.pt] [--url URL]``: the Model Zoo's CI steps on the packaged bundle.
* ``lint``: the Model Zoo's format gate (isort, black, flake8) run in the zoo's layout, and the code checks.

Run from the repository (bundle) root. ``scripts`` needs no path set-up here: it is ``bundle``'s sibling, so it is
importable wherever ``bundle`` is; the tools that read *another* bundle tree (``verify --bundle_root``, the zoo
tree of ``zoo_check``) use :func:`bundle.monailabel_app.lib.scripts_path.scripts_on_path`.
"""

from __future__ import annotations

import fire

from bundle.monailabel_app.lib.study import make_study
from bundle.tools.lint import lint
from bundle.tools.package import package
from bundle.tools.verify import verify
from bundle.tools.zoo_checks import zoo_check


def main() -> None:
    commands = {"verify": verify, "package": package, "make_study": make_study, "zoo_check": zoo_check, "lint": lint}
    fire.Fire(commands, name="python -m bundle")


if __name__ == "__main__":
    main()
