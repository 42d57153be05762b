"""The checks of ``python -m bundle lint`` (bundle/tools/code_checks.py, bundle/tools/lint.py): each finds a planted
violation in a small tree, and the project passes the enforced code checks. The zoo's format gate fails on an
import block sorted as if ``scripts`` were first-party, in the zoo's layout."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bundle.tools.code_checks import (
    CODE_CHECKS,
    check_class_size,
    check_frame_owner,
    check_function_imports,
    check_import_cycles,
    check_scripts_root,
    long_classes_without_reason,
    scan_frame_numbers,
)
from bundle.tools.lint import zoo_gate

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


# ------------------------------------------------------------------------------------------ frame owner
SCANNER_CASES = [
    ("size = 128\n", ["128"]),
    ("def f(n: int = 128.0): pass\n", ["128.0"]),
    ("x = hu * 2500 - 1024\n", ["2500", "1024"]),
    ("spacing = 2.5\n", ["2.5"]),
    ("c = 63.5\n", ["63.5"]),
    ("scale = 4e-4\n", ["4e-4"]),
    ("s = 32_0\n", ["32_0"]),
    ("a = np.diag([-1.0, -1.0, 1.0, 1.0])\n", ["LPS->RAS flip [-1, -1, 1]"]),
    ("a = affine * np.array([-1, -1, 1])[:, None]\n", ["LPS->RAS flip [-1, -1, 1]"]),
    ("a[:2] *= -1\n", ["sign flip *= -"]),
    ("LPS_TO_RAS = M\n", ["LPS_TO_RAS defined"]),
    ('"""A (1, 128, 128, 128) volume of 2.5 mm voxels, HU = x * 2500 - 1024."""\n', []),
    ("y = 1  # 128 x 128, 320 mm\n", []),
    ('name = "diag([-1, -1, 1, 1]) 320"\n', []),
    ("x = t.expand(-1, 3, -1, -1)\ny = rot90(x, -1, [-2, -1])\nn = 129 + 127 + 2.25\n", []),
    ("from scripts.frame import LPS_TO_RAS\nb = LPS_TO_RAS @ a\n", []),
]


@pytest.mark.parametrize("source, expected", SCANNER_CASES)
def test_frame_scanner_finds_planted_restatements(source, expected):
    assert [what for _, what, _ in scan_frame_numbers(source)] == expected


def test_frame_owner_reports_a_planted_module_and_a_stale_allowed_entry(tmp_path):
    root = _tree(
        tmp_path,
        {
            "scripts/frame.py": "SHAPE = 128\n",
            "scripts/planted.py": "def place(v, n=128):\n    return (v - 63.5) * 2.5\n",
            "scripts/ok.py": "MAGIC = 128  # allowed below\n",
        },
    )
    allowed = (("scripts/ok.py", 128, "MAGIC = 128", "a file magic"), ("scripts/gone.py", 320, "x", "stale"))
    problems = check_frame_owner(root, allowed)
    assert [p.split(" (")[0] for p in problems[:3]] == [
        "scripts/planted.py:1: 128",
        "scripts/planted.py:2: 63.5",
        "scripts/planted.py:2: 2.5",
    ]
    assert len(problems) == 4 and "scripts/gone.py: ALLOWED_NUMBERS entry 320" in problems[3], problems
    assert check_frame_owner(tmp_path / "elsewhere") is None  # no scripts/frame.py: not applicable


# ------------------------------------------------------------------------------------------- class size
def test_class_size_finds_a_long_class_without_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(130))
    assert long_classes_without_reason(f'class Big:\n    """Doc."""\n{body}\n') == [("Big", 1, 132)]
    assert long_classes_without_reason(f'class Big:\n    """Doc.\n\n    Size: one table.\n    """\n{body}\n') == []
    root = _tree(tmp_path, {"bundle/big.py": f'class Big:\n    """Doc."""\n{body}\n'})
    assert check_class_size(root) == [
        "bundle/big.py:1: class Big has 132 lines (over 120) and no 'Size:' paragraph in its docstring saying why "
        "it is one class"
    ]


# ---------------------------------------------------------------------------------------- import cycles
def test_import_cycles_finds_a_planted_cycle_and_ignores_deferred_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "scripts/__init__.py": "",
            "scripts/a/__init__.py": "",
            "scripts/a/one.py": "from scripts.a.two import f\n",
            "scripts/a/two.py": "from ..b import three\n\ndef f():\n    pass\n",
            "scripts/b/__init__.py": "",
            "scripts/b/three.py": "import scripts.a.one\n",
            # neither of these runs at import time: no cycle with one.py
            "scripts/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scripts.d import x\n",
            "scripts/d.py": "def g():\n    from scripts.c import y\n",
        },
    )
    (problem,) = check_import_cycles(root)
    assert problem.startswith("import cycle among scripts.a.one, scripts.a.two, scripts.b.three:"), problem
    assert "scripts.a.two -> scripts.b.three" in problem and "scripts.b.three -> scripts.a.one" in problem


# ----------------------------------------------------------------------------------------- scripts root
def test_scripts_root_finds_a_module_outside_the_subpackages(tmp_path):
    root = _tree(tmp_path, {f"scripts/{n}.py": "" for n in ("__init__", "__main__", "frame", "errors", "drr")})
    (problem,) = check_scripts_root(root)
    assert problem.startswith("scripts/drr.py: a module in the scripts root"), problem


# ------------------------------------------------------------------------------------ function imports
FUNCTION_IMPORTS = """\
import os


def bare():
    from scripts.frame import FRAME

    return FRAME


def said():
    from scripts.frame import FRAME  # a real cycle: frame imports this module

    import json  # not the project's: no reason needed
    return FRAME, json


def above():
    # heavy optional dependency
    from scripts.projection import itk_renderer

    return itk_renderer


def code_above():
    x = os.sep  # a comment of the line above, not of the import
    from .frame import FRAME

    return x, FRAME
"""


def test_function_imports_need_a_reason(tmp_path):
    root = _tree(tmp_path, {"scripts/m.py": FUNCTION_IMPORTS})
    assert check_function_imports(root) == [
        "scripts/m.py:5: import of scripts.frame inside a function without a comment saying why it is not at the top",
        "scripts/m.py:26: import of .frame inside a function without a comment saying why it is not at the top",
    ]


# ---------------------------------------------------------------------------------------- the project
def test_the_project_passes_the_enforced_code_checks():
    failed = {c.name: c.run(REPO) for c in CODE_CHECKS if c.enforced}
    assert all(v is not None for v in failed.values()), failed  # every check applies to this tree
    failed = {k: v for k, v in failed.items() if v}
    assert not failed, "\n".join(f"{k}: {p}" for k, v in failed.items() for p in v)


# --------------------------------------------------------------------------------- the zoo's format gate
ZOO_SORTED = '"""Doc."""\n\nimport torch\nfrom scripts.frame import FRAME\n\nprint(torch, FRAME)\n'


def test_zoo_gate_fails_on_imports_sorted_with_scripts_first_party(tmp_path):
    """In the zoo's layout ``scripts`` is third-party: a separate ``from scripts`` block (what isort does with
    ``known_first_party = scripts``) fails the zoo's isort; the zoo's order passes."""
    files = {"scripts/__init__.py": '"""Package."""\n', "LICENSE": "x\n"}
    own_order = ZOO_SORTED.replace("import torch\nfrom scripts", "import torch\n\nfrom scripts")
    root = _tree(tmp_path / "bad", {**files, "scripts/mod.py": own_order})
    results = {name: (rc, out) for name, rc, out in zoo_gate(root, sorted([*files, "scripts/mod.py"]))}
    assert set(results) == {"zoo isort", "zoo black", "zoo flake8"}
    assert results["zoo isort"][0] != 0 and "scripts/mod.py" in results["zoo isort"][1], results
    assert results["zoo black"][0] == 0 and results["zoo flake8"][0] == 0, results

    root = _tree(tmp_path / "good", {**files, "scripts/mod.py": ZOO_SORTED})
    results = {name: (rc, out) for name, rc, out in zoo_gate(root, sorted([*files, "scripts/mod.py"]))}
    assert all(rc == 0 for rc, _ in results.values()), results
