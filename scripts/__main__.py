"""Command line of the bundle: ``python -m scripts <command> [--flags]`` (built with ``fire``).

Run ``python -m scripts --help`` for the list of commands and ``python -m scripts <command> --help``
for one command's flags.
"""

from __future__ import annotations

import fire


def _commands() -> dict:
    # imported when the command line runs, not when the package is imported
    from scripts.assets.example_data import download_example_cli
    from scripts.assets.pretrained import download_weights_cli
    from scripts.networks.import_official import import_official_cli
    from scripts.projection.drr import drr_cli

    return {
        "download_example": download_example_cli,
        "download_weights": download_weights_cli,
        "drr": drr_cli,
        "import_official": import_official_cli,
    }


def main() -> None:
    from scripts import errors

    errors.install()  # one line per expected error: installed by this entry point, never on import
    fire.Fire(_commands(), name="python -m scripts")


if __name__ == "__main__":
    main()
