"""The command line of the workflows: flags as they arrive (``python -m monai.bundle run ... --resume true`` passes
them through ``fire`` as strings), and this process's command as a user would type it again (the resume command
that :class:`scripts.handlers.CleanStop` prints on Ctrl-C, read at the moment it is printed).

No config value is computed from the process's command line: configs get their values from their own keys and
the overrides MONAI applies to them."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["flag", "command_line", "shell_quote", "resume_command"]


def flag(value: Any, name: str = "flag") -> bool:
    """A command-line switch as a bool: fire passes ``--resume true`` as the string ``"true"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", "none", ""):
        return False
    raise ValueError(f"--{name} must be true or false, got {value!r}")


def command_line(extra: Mapping[str, str] | None = None) -> str:
    """The command line of this process as a user would type it again, with ``extra`` flags set."""
    argv = list(sys.argv)
    main = argv[0].replace(os.sep, "/")
    if main.endswith("monai/bundle/__main__.py"):
        head = ["-m", "monai.bundle"]
    elif main.endswith("scripts/__main__.py"):
        head = ["-m", "scripts"]
    else:
        head = [argv[0]]
    args = argv[1:]
    for option, value in (extra or {}).items():
        if option in args:
            i = args.index(option)
            args[i + 1 : i + 2] = [value]
        else:
            args += [option, value]
    exe = sys.executable or "python"
    rel = os.path.relpath(exe) if os.path.isabs(exe) else exe
    exe = rel if not rel.startswith("..") else exe
    return " ".join(shell_quote(a) for a in [exe, *head, *args])


def shell_quote(arg: str) -> str:
    """Shell quoting that keeps config lists readable: ``"['a.json','b.json']"`` rather than shlex's ``'['"'"'a...``."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def resume_command() -> str:
    """This training's command with ``--resume true``."""
    return command_line({"--resume": "true"})
