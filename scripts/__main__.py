"""Command line of the bundle: ``python -m scripts <command> [--flags]`` (built with ``fire``).

Run ``python -m scripts --help`` for the list of commands and ``python -m scripts <command> --help``
for one command's flags.

Only the module of the command that runs is imported (``python -m scripts drr`` never imports the networks,
MONAI or the example-data downloader): whole-command time is part of what a user waits for.
"""

from __future__ import annotations

import importlib
import sys

import fire
from scripts import errors

#: command name -> (module, function); imported only when that command runs (or for the top-level help).
COMMANDS = {
    "download_example": ("scripts.assets.example_data", "download_example_cli"),
    "download_weights": ("scripts.assets.pretrained", "download_weights_cli"),
    "drr": ("scripts.projection.drr", "drr_cli"),
    "import_official": ("scripts.networks.import_official", "import_official_cli"),
}


def _commands(argv: list[str] | None = None) -> dict:
    """The commands fire needs for ``argv``: the one named by its first argument, else all (help, typos)."""
    argv = sys.argv[1:] if argv is None else argv
    names = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    return {name: getattr(importlib.import_module(COMMANDS[name][0]), COMMANDS[name][1]) for name in names}


def main() -> None:
    errors.install()  # one line per expected error: installed by this entry point, never on import
    fire.Fire(_commands(), name="python -m scripts")


if __name__ == "__main__":
    main()
