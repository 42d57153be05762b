"""Code shape: a class of the bundle over about 120 lines says at its top why it is one class (a ``Size:``
paragraph of its docstring), so size is a decision rather than an accident."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 120


def long_classes_without_reason(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    """``(name, lines)`` of the classes longer than ``max_lines`` whose docstring has no ``Size:`` paragraph."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if lines > max_lines and not any(ln.strip().startswith("Size:") for ln in doc.splitlines()):
                out.append((node.name, lines))
    return out


def test_the_check_finds_a_long_class_without_a_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(130))
    assert long_classes_without_reason(f'class Big:\n    """Doc."""\n{body}\n') == [("Big", 132)]
    assert long_classes_without_reason(f'class Big:\n    """Doc.\n\n    Size: one table.\n    """\n{body}\n') == []
    assert long_classes_without_reason('class Small:\n    """Doc."""\n    x = 1\n') == []


def test_long_classes_say_why():
    files = sorted((REPO / "scripts").rglob("*.py")) + sorted((REPO / "bundle").rglob("*.py"))
    found = [
        f"{p.relative_to(REPO)}: {name} ({lines} lines)"
        for p in files
        for name, lines in long_classes_without_reason(p.read_text(encoding="utf-8"))
    ]
    assert not found, f"classes over {MAX_LINES} lines without a 'Size:' reason in their docstring:\n" + "\n".join(
        found
    )
