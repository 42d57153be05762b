"""``python -m bundle lint [--fix] [--paths a.py,b/]``: the Model Zoo's format gate, on the whole project.

What the MONAI Model Zoo runs on a bundle's code (Project-MONAI/model-zoo, ``runtests.sh --codeformat``
and ``.pre-commit-config.yaml``), with the zoo's settings copied into this project's ``setup.cfg``
(flake8, isort) and ``pyproject.toml`` (black); tool versions pinned in ``requirements-dev.txt``:

* ``isort --check-only``, ``black --check``, ``flake8`` (with flake8-bugbear, -comprehensions,
  -executable and pep8-naming, the zoo's plugins);
* the zoo's pre-commit hooks, from the ``pre-commit-hooks`` package (the zoo's rev 4.6.0) and run
  without pre-commit (which would fetch the hooks from GitHub): ``pretty-format-json --no-sort-keys
  --indent=4`` on JSON, ``check-yaml``, ``check-toml``, ``check-docstring-first``,
  ``check-executables-have-shebangs``, ``check-case-conflict``, ``check-added-large-files
  --maxkb=1024`` (not on ``tests/data/``: test fixtures never go into the zoo), ``detect-private-key``,
  and read-only equivalents of the fixers
  ``end-of-file-fixer``, ``trailing-whitespace`` (not on ``.ts``/``.pt``) and ``mixed-line-ending``.

The files are git's (tracked plus untracked, not ignored); notebooks are excluded as in the zoo.
``--fix`` rewrites instead of checking (isort, black, the JSON formatter, end of file, trailing
whitespace, line endings), then checks. Exit status 1 if any check fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from bundle import REPO_ROOT

__all__ = ["lint", "project_files", "text_problems"]

_EXCLUDE = re.compile(r".*\.ipynb$")
_NO_TRAILING_WS = re.compile(r".*\.(ts|pt)$")
_BIN = Path(sys.executable).parent


def project_files(root: Path = REPO_ROOT, paths: Sequence[str] | None = None) -> list[str]:
    """git's files of the project (tracked and untracked-not-ignored), relative to ``root``, sorted."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *(paths or [])],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    files = sorted({f for f in out.split("\0") if f and (root / f).is_file() and not _EXCLUDE.fullmatch(f)})
    return files


def _is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def text_problems(name: str, data: bytes) -> list[str]:
    """What ``end-of-file-fixer``, ``trailing-whitespace`` and ``mixed-line-ending`` would change."""
    if not data or not _is_text(data):
        return []
    problems = []
    if not data.endswith(b"\n") or data.endswith(b"\n\n") or data.strip(b"\r\n") == b"":
        problems.append("end-of-file-fixer: the file must end with exactly one newline")
    if not _NO_TRAILING_WS.fullmatch(name):
        lines = [i + 1 for i, ln in enumerate(data.split(b"\n")) if ln.rstrip(b"\r") != ln.rstrip(b"\r").rstrip()]
        if lines:
            problems.append(f"trailing-whitespace: line(s) {', '.join(map(str, lines[:5]))}")
    crlf = data.count(b"\r\n")
    if crlf and crlf != data.count(b"\n"):
        problems.append("mixed-line-ending: both LF and CRLF")
    return problems


def _fix_text(path: Path) -> None:
    data = path.read_bytes()
    if not data or not _is_text(data):
        return
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if not _NO_TRAILING_WS.fullmatch(path.name):
        lines = [ln.rstrip() for ln in lines]
    fixed = b"\n".join(lines).rstrip(b"\n") + b"\n"
    if fixed.strip() == b"":
        fixed = b""
    if fixed != data:
        path.write_bytes(fixed)


def _run(cmd: list[str], root: Path) -> tuple[int, str]:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, encoding="utf-8", errors="replace")
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _tool(name: str) -> str:
    exe = _BIN / name
    if not exe.exists():
        raise SystemExit(f"{name} not found beside {sys.executable}: pip install -r requirements-dev.txt")
    return str(exe)


def lint(fix: bool = False, paths: str | Sequence[str] | None = None, bundle_root: str | None = None) -> None:
    """Check (or with ``--fix`` rewrite, then check) the project's files with the zoo's tools and settings.

    Args:
        fix: rewrite the files instead of only reporting.
        paths: comma-separated files or folders to limit the run to (default: the whole project).
        bundle_root: the project root (default: this repository).
    """
    root = Path(bundle_root).resolve() if bundle_root else REPO_ROOT
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    files = project_files(root, paths)
    py = [f for f in files if f.endswith(".py")]
    by_ext = {ext: [f for f in files if f.endswith(ext)] for ext in (".json", ".yml", ".yaml", ".toml")}
    executables = [f for f in files if (root / f).stat().st_mode & 0o111]  # pre-commit's `types: [executable]`
    # the zoo's 1 MB limit is for what goes into the zoo: the bundle, not this project's test fixtures
    sizable = [f for f in files if not f.startswith("tests/data/")]
    # isort/black/flake8 read Python only: given paths, their folders and .py files (never a JSON or a doc)
    targets = [p for p in paths if p.endswith(".py") or (root / p).is_dir()] if paths else ["."]
    if fix and targets:
        _run([sys.executable, "-m", "isort", *targets], root)
        _run([sys.executable, "-m", "black", "-q", *targets], root)
    if fix:
        if by_ext[".json"]:
            _run([_tool("pretty-format-json"), "--autofix", "--no-sort-keys", "--indent=4", *by_ext[".json"]], root)
        for f in files:
            _fix_text(root / f)

    checks: list[tuple[str, list[str], list[str]]] = [
        ("isort", [sys.executable, "-m", "isort", "--check-only", "--diff"], targets),
        ("black", [sys.executable, "-m", "black", "--check"], targets),
        ("flake8", [sys.executable, "-m", "flake8"], targets),
        ("pretty-format-json", [_tool("pretty-format-json"), "--no-sort-keys", "--indent=4"], by_ext[".json"]),
        ("check-yaml", [_tool("check-yaml")], by_ext[".yml"] + by_ext[".yaml"]),
        ("check-toml", [_tool("check-toml")], by_ext[".toml"]),
        ("check-docstring-first", [_tool("check-docstring-first")], py),
        ("check-executables-have-shebangs", [_tool("check-executables-have-shebangs")], executables),
        ("check-case-conflict", [_tool("check-case-conflict")], files),
        ("check-added-large-files", [_tool("check-added-large-files"), "--enforce-all", "--maxkb=1024"], sizable),
        ("detect-private-key", [_tool("detect-private-key")], files),
    ]
    failed = []
    for name, cmd, args in checks:
        if not args:
            print(f"SKIP  {name} (no files)")
            continue
        rc, out = _run(cmd + args, root)
        print(f"{'PASS' if rc == 0 else 'FAIL'}  {name} ({len(args) if args != ['.'] else 'project'})")
        if rc != 0:
            failed.append(name)
            print("      " + "\n      ".join(out.splitlines()[:40]))
    text_failures = [(f, p) for f in files for p in text_problems(f, (root / f).read_bytes())]
    print(
        f"{'FAIL' if text_failures else 'PASS'}  end-of-file / trailing-whitespace / mixed-line-ending "
        f"({len(files)})"
    )
    for f, p in text_failures[:40]:
        print(f"      {f}: {p}")
    if text_failures:
        failed.append("text")
    print(
        f"lint: {'all passed' if not failed else 'failed: ' + ', '.join(failed)}"
        + ("" if fix else " (python -m bundle lint --fix rewrites)")
    )
    if failed:
        sys.exit(1)
