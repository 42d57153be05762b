"""The project's own code checks, run by ``python -m bundle lint`` after the Model Zoo's format gate.

Each check reads the Python source of ``scripts/`` and ``bundle/`` (never imports it) and returns its findings,
one line each (``path:line: what``); :data:`CODE_CHECKS` lists them in the order lint runs them.

* ``frame_owner``: the output volume's numbers (128 voxels, 320 mm, 2.5 mm, ``HU = x * 2500 - 1024``, the
  LPS -> RAS flip) live in ``scripts/frame.py`` only (issue #14). Code tokens are scanned with :mod:`tokenize`,
  so docstrings and comments may state them. A number outside the owner fails unless :data:`ALLOWED_NUMBERS`
  says why it is not the frame; an entry that matches nothing any more fails too.
* ``class_size``: a class over :data:`MAX_CLASS_LINES` lines says why in a ``Size:`` paragraph of its docstring.
* ``import_cycles``: no cycle in the graph of the project's modules (``scripts``, ``bundle``) built with
  :mod:`ast` from the imports that run at import time (module level, not in functions, not under
  ``if TYPE_CHECKING:``). ``from package import name`` is an edge to ``package.name`` when that is a module,
  else to the package itself.
* ``scripts_root``: no module in the ``scripts`` package root but its entry points (``__init__``, ``__main__``)
  and the cross-cutting ones in :data:`SCRIPTS_ROOT_MODULES`.
* ``function_imports``: an import of the project's own modules (``scripts``) inside a function has a comment on
  its line, or on the line above, saying why it is not at the top (a heavy optional dependency, a real cycle,
  a package only importable inside a ``scripts_on_path`` block).

``tests/`` is out of scope: tests state expected values on purpose.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = [
    "ALLOWED_NUMBERS",
    "CODE_CHECKS",
    "CodeCheck",
    "MAX_CLASS_LINES",
    "SCRIPTS_ROOT_MODULES",
    "check_class_size",
    "check_frame_owner",
    "check_function_imports",
    "check_import_cycles",
    "check_scripts_root",
    "function_imports_without_reason",
    "import_graph",
    "long_classes_without_reason",
    "scan_frame_numbers",
]

SCANNED = ("scripts", "bundle")
OWN_PACKAGES = ("scripts", "bundle")

# ------------------------------------------------------------------------------------------ frame owner
FRAME_OWNER = "scripts/frame.py"
#: This module states the numbers on purpose (:data:`FRAME_NUMBERS`, :data:`ALLOWED_NUMBERS`).
_THIS = "bundle/tools/code_checks.py"
#: The frame's numbers (128 voxels, 320 mm, 2.5 mm, 2500 HU range, 1024 HU offset) and forms derived from
#: them (63.5: the centre voxel; 1476 HU: the top of the scale; 0.0004 = 1 / 2500).
FRAME_NUMBERS = (128.0, 320.0, 2.5, 2500.0, 1024.0, 63.5, 1476.0, 0.0004)

#: (path, number, fragment of the source line, why this is not the output frame). An entry matches the
#: occurrences of ``number`` in ``path`` on source lines containing ``fragment``.
ALLOWED_NUMBERS: tuple[tuple[str, float, str, str], ...] = (
    (
        "scripts/transforms/radiograph.py",
        128,
        "VIEW_SHAPE: tuple[int, int] = (128, 128)",
        "the network input's radiograph pixel grid (the owner of the input views' shape), not the output cube",
    ),
    ("bundle/monailabel_app/lib/study.py", 128, 'head[128:132] == b"DICM"', "DICOM file magic: 128-byte preamble"),
    ("scripts/inference/dicom_ct_series.py", 128, "_PREAMBLE = 128", "DICOM File Preamble: 128 bytes (PS3.10 7.1)"),
    ("scripts/assets/example_data.py", 128, "f.seek(128)", "DICOM file magic: skipping the 128-byte preamble"),
    (
        "scripts/ct/loader.py",
        1024,
        "AIR_HU = -1024.0",
        "air in HU for the CT loader's padding and resampling (a property of CT data, not the target scale)",
    ),
    (
        "scripts/projection/geometry.py",
        320,
        '"detector_shape": (320, 320)',
        "DRR detector pixels of the geometry presets (500 mm detector), not the cube's 320 mm",
    ),
    (
        "scripts/projection/geometry.py",
        320,
        "detector_shape: tuple[int, int] = (320, 320)",
        "DRR detector pixels of the default geometry (the perx2ct preset's)",
    ),
    (
        "scripts/projection/geometry.py",
        320,
        '"sad_mm": 320.0',
        "the official code's camera distance (1 official world unit); fixed by its weights, not the bundle frame",
    ),
    ("scripts/networks/perx2ct.py", 128, "decoder_channels: int = 128", "decoder channel width (paper: 128)"),
    ("scripts/networks/decoder.py", 128, "base_channels: int = 128", "decoder channel width (paper: 128)"),
    ("scripts/networks/presets.py", 128, '"decoder_channels": 128', "decoder channel width of the paper presets"),
    ("scripts/networks/presets.py", 128, '"widths": (64, 128, 256)', "ResNet layer1..3 channel widths"),
    ("scripts/networks/encoder.py", 128, "widths: Sequence[int] = (64, 128, 256)", "ResNet channel widths"),
    ("scripts/networks/encoder.py", 128, "widths[:2] == (64, 128)", "ResNet channel widths (torchvision check)"),
    ("scripts/training/losses.py", 128, "_VGG16_BLOCKS", "VGG16 channel widths (LPIPS)"),
    ("scripts/training/losses.py", 128, "LPIPS_CHANNELS", "LPIPS VGG feature channel widths"),
)

#: Tokens after which ``-`` is a sign, not a subtraction.
_BEFORE_UNARY = {"(", "[", "{", ",", "=", ":", "*=", "+=", "-=", "/=", "@=", "return", "lambda", "yield"}


def _number(text: str) -> float | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _is_frame_number(value: float) -> bool:
    return any(abs(value - n) <= 1e-12 * max(1.0, n) for n in FRAME_NUMBERS)


def _code_tokens(source: str) -> list[tokenize.TokenInfo]:
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]


def _signed_values(tokens: list[tokenize.TokenInfo]) -> Iterator[tuple[int, float | None]]:
    """(token index, value) with a unary minus folded into the number; None for anything else."""
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == tokenize.OP and t.string == "-" and i + 1 < len(tokens) and tokens[i + 1].type == tokenize.NUMBER:
            prev = tokens[i - 1] if i else None
            if prev is None or prev.string in _BEFORE_UNARY:
                v = _number(tokens[i + 1].string)
                yield i, (None if v is None else -v)
                i += 2
                continue
        yield i, (_number(t.string) if t.type == tokenize.NUMBER else None)
        i += 1


def scan_frame_numbers(source: str) -> list[tuple[int, str, str]]:
    """Findings in one module's source: ``(line, what, source line)``. Numbers of the frame in code (not in
    strings, docstrings or comments), LPS -> RAS sign flips ``[-1, -1, 1...]`` or ``*= -1``, and a definition
    of ``LPS_TO_RAS``."""
    tokens = _code_tokens(source)
    found: list[tuple[int, str, str]] = []
    for t in tokens:
        if t.type == tokenize.NUMBER:
            v = _number(t.string)
            if v is not None and _is_frame_number(v):
                found.append((t.start[0], t.string, t.line.rstrip("\n")))
    values = [(i, v) for i, v in _signed_values(tokens) if tokens[i].string != ","]  # literal entries in order
    for a, b, c in zip(values, values[1:], values[2:]):
        if a[1] == -1.0 and b[1] == -1.0 and c[1] == 1.0:
            t = tokens[a[0]]
            found.append((t.start[0], "LPS->RAS flip [-1, -1, 1]", t.line.rstrip("\n")))
    for i, t in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        if t.type == tokenize.OP and t.string == "*=" and nxt.string == "-":
            found.append((t.start[0], "sign flip *= -", t.line.rstrip("\n")))
        if (
            t.type == tokenize.NAME
            and t.string == "LPS_TO_RAS"
            and nxt.type == tokenize.OP
            and nxt.string in ("=", ":")
        ):
            found.append((t.start[0], "LPS_TO_RAS defined", t.line.rstrip("\n")))
    return found


def _allowed(entry: tuple[str, float, str, str], path: str, what: str, line: str) -> bool:
    v = _number(what)
    return entry[0] == path and v is not None and abs(v - float(entry[1])) < 1e-12 and entry[2] in line


def check_frame_owner(
    root: Path, allowed: tuple[tuple[str, float, str, str], ...] = ALLOWED_NUMBERS
) -> list[str] | None:
    """The frame's numbers restated outside ``scripts/frame.py``, and ``allowed`` entries that match nothing;
    None (not applicable) for a tree without ``scripts/frame.py``."""
    if not (root / FRAME_OWNER).is_file():
        return None
    findings = [
        (rel, line, what, text)
        for rel, source in _sources(root)
        if rel not in (FRAME_OWNER, _THIS)
        for line, what, text in scan_frame_numbers(source)
    ]
    problems = [
        f"{rel}:{line}: {what} (the output frame restated: read it from scripts.frame.FRAME, or add an "
        f"ALLOWED_NUMBERS entry saying why it is not the frame): {text.strip()}"
        for rel, line, what, text in findings
        if not any(_allowed(e, rel, what, text) for e in allowed)
    ]
    problems += [f"{e[0]}: ALLOWED_NUMBERS entry without a reason: {e}" for e in allowed if not e[3].strip()]
    problems += [
        f"{e[0]}: ALLOWED_NUMBERS entry {e[1]} in {e[2]!r} matches nothing any more (remove it)"
        for e in allowed
        if not any(_allowed(e, f[0], f[2], f[3]) for f in findings)
    ]
    return problems


# ------------------------------------------------------------------------------------------- class size
MAX_CLASS_LINES = 120


def long_classes_without_reason(source: str, max_lines: int = MAX_CLASS_LINES) -> list[tuple[str, int, int]]:
    """``(name, line, lines)`` of the classes longer than ``max_lines`` whose docstring has no ``Size:``
    paragraph."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if lines > max_lines and not any(ln.strip().startswith("Size:") for ln in doc.splitlines()):
                out.append((node.name, node.lineno, lines))
    return out


def check_class_size(root: Path) -> list[str]:
    return [
        f"{rel}:{line}: class {name} has {n} lines (over {MAX_CLASS_LINES}) and no 'Size:' paragraph in its "
        "docstring saying why it is one class"
        for rel, source in _sources(root)
        for name, line, n in long_classes_without_reason(source)
    ]


# ---------------------------------------------------------------------------------------- import cycles
def _module_name(rel: str) -> str:
    parts = rel[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (not in functions, not type-checking only)."""
    stack: list[ast.AST] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(reversed(node.orelse))
        else:
            stack.extend(
                reversed([c for c in ast.iter_child_nodes(node) if isinstance(c, (ast.stmt, ast.excepthandler))])
            )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time. ``sources``: relative path -> source text."""
    modules = {_module_name(rel): rel for rel in sources}

    def known(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {}
    for name, rel in modules.items():
        edges: set[str] = set()
        is_package = rel.endswith("__init__.py")
        for node in _import_time_imports(ast.parse(sources[rel])):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(name, is_package, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges.update(t for t in map(known, targets) if t and t != name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_import_cycles(root: Path) -> list[str]:
    graph = import_graph(dict(_sources(root)))
    problems = []
    for component in _cycles(graph):
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        problems.append(f"import cycle among {', '.join(component)}: {'; '.join(edges)}")
    return problems


# ----------------------------------------------------------------------------------------- scripts root
#: The modules allowed in the ``scripts`` package root: its entry points and the cross-cutting modules
#: (the output frame, where a slice lies in it, the one-line errors).
SCRIPTS_ROOT_MODULES = ("__init__", "__main__", "frame", "slicing", "errors")


def check_scripts_root(root: Path) -> list[str]:
    folder = root / "scripts"
    if not folder.is_dir():
        return []
    return [
        f"scripts/{p.name}: a module in the scripts root; move it into the subpackage of its concept (the root "
        f"holds only {', '.join(SCRIPTS_ROOT_MODULES)})"
        for p in sorted(folder.glob("*.py"))
        if p.stem not in SCRIPTS_ROOT_MODULES
    ]


# ------------------------------------------------------------------------------------ function imports
def _comment_lines(source: str) -> set[int]:
    return {t.start[0] for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}


def _code_lines(source: str) -> set[int]:
    """Lines holding code (a comment-only line above an import is not one)."""
    return {t.start[0] for t in _code_tokens(source)}


def function_imports_without_reason(source: str, own: tuple[str, ...] = ("scripts",)) -> list[tuple[int, str]]:
    """``(line, module)`` of the imports of ``own`` packages (or relative ones) inside functions with no comment
    on their first or last line, nor on a comment-only line right above."""
    tree = ast.parse(source)
    comments, code = _comment_lines(source), _code_lines(source)
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            mine = [n for n in names if n.startswith(".") or n.split(".")[0] in own]
            if not mine:
                continue
            above = node.lineno - 1
            explained = {node.lineno, node.end_lineno} & comments or (above in comments and above not in code)
            if not explained:
                out.append((node.lineno, mine[0]))
    return sorted(set(out))


def check_function_imports(root: Path) -> list[str]:
    return [
        f"{rel}:{line}: import of {module} inside a function without a comment saying why it is not at the top"
        for rel, source in _sources(root)
        for line, module in function_imports_without_reason(source)
    ]


# ------------------------------------------------------------------------------------------------ table
def _sources(root: Path) -> list[tuple[str, str]]:
    """``(path relative to root, source)`` of the Python files of the scanned packages, sorted."""
    files = sorted(p for d in SCANNED for p in (root / d).rglob("*.py") if "__pycache__" not in p.parts)
    return [(p.relative_to(root).as_posix(), p.read_text(encoding="utf-8")) for p in files]


@dataclass(frozen=True)
class CodeCheck:
    """One code check: ``run(root)`` returns its problems (None: not applicable to this tree). A check that is
    not ``enforced`` reports its problems as ``WARN`` without failing lint."""

    name: str
    run: Callable[[Path], list[str] | None]
    enforced: bool = True


#: The checks ``python -m bundle lint`` runs, in order. ``function_imports`` reports without failing until the
#: existing function-level imports have their comment (then set ``enforced=True``).
CODE_CHECKS: tuple[CodeCheck, ...] = (
    CodeCheck("frame_owner", check_frame_owner),
    CodeCheck("class_size", check_class_size),
    CodeCheck("import_cycles", check_import_cycles),
    CodeCheck("scripts_root", check_scripts_root),
    CodeCheck("function_imports", check_function_imports),
)
