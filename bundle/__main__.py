"""Command line of the bundle tooling: ``python -m bundle <command> [--flags]`` (built with ``fire``).

* ``verify``: the Model Zoo's checks, one PASS/FAIL line each; exit status 1 on any failure.
* ``package --output DIR [--ckpt_file model.pt]``: write ``DIR/perx2ct_<version>.zip``.
* ``make_study --pa PA --lateral LATERAL --output STUDIES/<id>.nii.gz``: one MONAI Label study.
* ``zoo_check [--ckpt_file model.pt] [--url URL]``: the Model Zoo's CI steps on the packaged bundle.
* ``lint``: the Model Zoo's format gate (isort, black, flake8 with the zoo's settings) on the project.

Run from the repository (bundle) root.
"""

from __future__ import annotations

import fire


def _make_study(pa: str, lateral: str, output: str, pixel_spacing_mm: float = 1.0) -> str:
    """Write a MONAI Label study (2-frame NIfTI: frame 0 PA, frame 1 lateral) from two radiographs."""
    import sys

    from bundle import REPO_ROOT

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # the bundle's `scripts` reads non-8-bit radiographs
    from bundle.monailabel_app.lib.study import make_study

    return make_study(pa, lateral, output, pixel_spacing_mm)


def main() -> None:
    from bundle.lint import lint
    from bundle.package import package
    from bundle.verify import verify
    from bundle.zoo_checks import zoo_check

    commands = {"verify": verify, "package": package, "make_study": _make_study, "zoo_check": zoo_check, "lint": lint}
    fire.Fire(commands, name="python -m bundle")


if __name__ == "__main__":
    main()
