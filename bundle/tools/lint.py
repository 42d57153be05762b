"""``python -m bundle lint [--fix] [--paths a.py,b/]``: the Model Zoo's format gate, and the project's code checks.

Four parts, one ``PASS``/``FAIL``/``WARN``/``SKIP`` line per check; exit status 1 if any fails:

1. **The zoo's gate in the zoo's layout** (``zoo isort``, ``zoo black``, ``zoo flake8``): the files the bundle
   archive holds (:func:`bundle.tools.package.in_archive`) are copied under ``<tmp>/models/perx2ct/`` with the
   zoo's ``setup.cfg`` and ``pyproject.toml`` at ``<tmp>`` (verbatim copies: ``zoo_setup.cfg``,
   ``zoo_pyproject.toml`` here), and the zoo's commands run from ``<tmp>`` as its ``runtests.sh --codeformat``
   runs them (Project-MONAI/model-zoo @ dfae206, ``runtests.sh`` lines 186-190, 244, 280, 307):
   ``isort --check "$(pwd)"``, ``black --skip-magic-trailing-comma --check "$(pwd)"``,
   ``flake8 "$(pwd)" --count --statistics``. There ``scripts`` is not a first-party package (the zoo's
   ``known_first_party`` is ``models``), so ``from scripts... import`` sorts into the third-party block.
2. **The same tools on the whole project** with its own ``setup.cfg``/``pyproject.toml`` (the zoo's settings;
   ``scripts`` third-party as in the zoo), so ``bundle/`` and ``tests/`` follow the same rules.
3. **The zoo's pre-commit hooks**, from the ``pre-commit-hooks`` package (the zoo's rev 4.6.0) and run without
   pre-commit (which would fetch the hooks from GitHub): ``pretty-format-json --no-sort-keys --indent=4`` on
   JSON, ``check-yaml``, ``check-toml``, ``check-docstring-first``, ``check-executables-have-shebangs``,
   ``check-case-conflict``, ``check-added-large-files --maxkb=1024`` (not on ``tests/data/``: test fixtures
   never go into the zoo), ``detect-private-key``, and read-only equivalents of the fixers
   ``end-of-file-fixer``, ``trailing-whitespace`` (not on ``.ts``/``.pt``) and ``mixed-line-ending``.
4. **The project's code checks** (:mod:`bundle.tools.code_checks`): the frame's owner, class size, import
   cycles, the ``scripts`` root, function-level imports. ``--skip function_imports`` (comma-separated names)
   leaves checks out.

The files are git's (tracked plus untracked, not ignored); notebooks are excluded as in the zoo.
``--fix`` rewrites instead of checking (isort and black in the zoo tree, copied back; then on the project; the
JSON formatter, end of file, trailing whitespace, line endings), then checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from bundle import BUNDLE_NAME, REPO_ROOT
from bundle.tools.code_checks import CODE_CHECKS
from bundle.tools.package import in_archive

__all__ = ["ZOO_PYPROJECT", "ZOO_SETUP_CFG", "lint", "project_files", "text_problems", "zoo_gate", "zoo_tree"]

#: The Model Zoo's settings files, verbatim (their headers say from which commit).
ZOO_SETUP_CFG = Path(__file__).resolve().parent / "zoo_setup.cfg"
ZOO_PYPROJECT = Path(__file__).resolve().parent / "zoo_pyproject.toml"

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


def zoo_tree(root: Path, files: Sequence[str], workdir: Path) -> Path:
    """Lay out the zoo-like tree in ``workdir``: the archive's files among ``files`` (relative to ``root``)
    under ``models/<name>/``, the zoo's ``setup.cfg`` and ``pyproject.toml`` at ``workdir``; returns
    ``workdir/models/<name>``."""
    bundle_dir = workdir / "models" / BUNDLE_NAME
    for name in files:
        if in_archive(name):
            (bundle_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, bundle_dir / name)
    shutil.copyfile(ZOO_SETUP_CFG, workdir / "setup.cfg")
    shutil.copyfile(ZOO_PYPROJECT, workdir / "pyproject.toml")
    return bundle_dir


#: The zoo's format commands (``runtests.sh --codeformat``), run from the zoo tree's root on ``$(pwd)``.
ZOO_COMMANDS = (
    ("zoo isort", ["-m", "isort", "--check"], ["-m", "isort"]),
    (
        "zoo black",
        ["-m", "black", "--skip-magic-trailing-comma", "--check"],
        ["-m", "black", "--skip-magic-trailing-comma"],
    ),
    ("zoo flake8", ["-m", "flake8"], None),
)


def zoo_gate(root: Path, files: Sequence[str], fix: bool = False) -> list[tuple[str, int, str]]:
    """Run the zoo's isort, black and flake8 as the zoo runs them on the bundle's files laid out as in the zoo;
    ``(check, return code, output)`` each (none when no file of ``files`` goes into the archive). With ``fix``,
    isort and black rewrite the tree first and the changed files are copied back to ``root``."""
    py = [f for f in files if in_archive(f) and f.endswith(".py")]
    if not py:
        return []
    with tempfile.TemporaryDirectory(prefix="perx2ct_zoo_lint_") as tmp:
        work = Path(tmp)
        bundle_dir = zoo_tree(root, files, work)
        here = str(work)  # "$(pwd)" of runtests.sh
        if fix:
            for _, _, fixer in ZOO_COMMANDS:
                if fixer:
                    _run([sys.executable, *fixer, here], work)
            for f in py:
                fixed = (bundle_dir / f).read_bytes()
                if fixed != (root / f).read_bytes():
                    (root / f).write_bytes(fixed)
        results = []
        for name, check, _ in ZOO_COMMANDS:
            extra = ["--count", "--statistics"] if name == "zoo flake8" else []
            rc, out = _run([sys.executable, *check, here, *extra], work)
            results.append((name, rc, out.replace(str(bundle_dir) + "/", "")))
    return results


def lint(
    fix: bool = False,
    paths: str | Sequence[str] | None = None,
    bundle_root: str | None = None,
    skip: str | Sequence[str] | None = None,
) -> None:
    """Check (or with ``--fix`` rewrite, then check) the project with the zoo's tools and settings, in the zoo's
    layout and in the project's, then run the code checks.

    Args:
        fix: rewrite the files instead of only reporting.
        paths: comma-separated files or folders to limit the run to (default: the whole project; the zoo
            gate and the code checks always read the whole bundle).
        bundle_root: the project root (default: this repository).
        skip: comma-separated code checks to leave out (``function_imports``, ...).
    """
    root = Path(bundle_root).resolve() if bundle_root else REPO_ROOT
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    skipped = {s.strip() for s in (skip.split(",") if isinstance(skip, str) else skip or []) if s.strip()}
    unknown = skipped - {c.name for c in CODE_CHECKS}
    if unknown:
        raise SystemExit(f"--skip: unknown check(s) {sorted(unknown)}; code checks: {[c.name for c in CODE_CHECKS]}")
    files = project_files(root, paths)
    py = [f for f in files if f.endswith(".py")]
    by_ext = {ext: [f for f in files if f.endswith(ext)] for ext in (".json", ".yml", ".yaml", ".toml")}
    executables = [f for f in files if (root / f).stat().st_mode & 0o111]  # pre-commit's `types: [executable]`
    # the zoo's 1 MB limit is for what goes into the zoo: the bundle, not this project's test fixtures
    sizable = [f for f in files if not f.startswith("tests/data/")]
    # isort/black/flake8 read Python only: given paths, their folders and .py files (never a JSON or a doc)
    targets = [p for p in paths if p.endswith(".py") or (root / p).is_dir()] if paths else ["."]
    failed: list[str] = []

    def show(name: str, rc: int, out: str, count: str) -> None:
        print(f"{'PASS' if rc == 0 else 'FAIL'}  {name} ({count})")
        if rc != 0:
            failed.append(name)
            print("      " + "\n      ".join(out.splitlines()[:40]))

    zoo = zoo_gate(root, project_files(root), fix=fix)
    if not zoo:
        print("SKIP  zoo isort / black / flake8 (no file of the bundle archive)")
    for name, rc, out in zoo:
        show(name, rc, out, f"models/{BUNDLE_NAME} in the zoo's layout")

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
    for name, cmd, args in checks:
        if not args:
            print(f"SKIP  {name} (no files)")
            continue
        rc, out = _run(cmd + args, root)
        show(name, rc, out, str(len(args)) if args != ["."] else "project")
    text_failures = [(f, p) for f in files for p in text_problems(f, (root / f).read_bytes())]
    show(
        "end-of-file / trailing-whitespace / mixed-line-ending",
        int(bool(text_failures)),
        "\n".join(f"{f}: {p}" for f, p in text_failures),
        str(len(files)),
    )

    for check in CODE_CHECKS:
        if check.name in skipped:
            print(f"SKIP  {check.name} (--skip)")
            continue
        problems = check.run(root)
        if problems is None:
            print(f"SKIP  {check.name} (not applicable to this tree)")
        elif problems and not check.enforced:
            print(f"WARN  {check.name} ({len(problems)} finding(s); reported, not enforced yet)")
            print("      " + "\n      ".join(problems[:60]))
        else:
            show(check.name, int(bool(problems)), "\n".join(problems), "code")
    print(
        f"lint: {'all passed' if not failed else 'failed: ' + ', '.join(failed)}"
        + ("" if fix else " (python -m bundle lint --fix rewrites the format)")
    )
    if failed:
        sys.exit(1)
