"""Issue #14: one owner for the output volume's frame.

The numbers of the reconstructed cube (128 voxels per side, 320 mm, 2.5 mm voxels, the intensity scale
``HU = x * 2500 - 1024``, the LPS -> RAS flip of its affine) live in :mod:`scripts.frame` (and in the
configs). Every other module reads them from :data:`scripts.frame.FRAME` or a
:class:`~scripts.frame.VolumeFrame` it is given.

This test scans the project's Python code (``scripts/`` and ``bundle/``) with :mod:`tokenize`: only code
counts, so docstrings and comments that *state* the frame ("(1, 128, 128, 128)") are fine. ``tests/`` is out
of scope: tests state expected values on purpose. A number of the frame outside ``scripts/frame.py`` fails
unless :data:`ALLOWED` lists it with the reason why that number is *not* the output frame. An entry matches
the occurrences of ``number`` in ``path`` on source lines containing ``fragment``; an entry that no longer
matches anything fails too (remove it).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("scripts", "bundle")
OWNER = "scripts/frame.py"

#: The frame's numbers (128 voxels, 320 mm, 2.5 mm, 2500 HU range, 1024 HU offset) and forms derived from
#: them (63.5: the centre voxel; 1476 HU: the top of the scale; 0.0004 = 1 / 2500).
FRAME_NUMBERS = (128.0, 320.0, 2.5, 2500.0, 1024.0, 63.5, 1476.0, 0.0004)

#: (path, number, fragment of the source line, why this is not the output frame).
ALLOWED: tuple[tuple[str, float, str, str], ...] = (
    (
        "scripts/transforms/radiograph.py",
        128,
        "VIEW_SHAPE: tuple[int, int] = (128, 128)",
        "the network input's radiograph pixel grid (the owner of the input views' shape), not the output cube",
    ),
    ("scripts/transforms/radiograph.py", 128, 'head[128:132] == b"DICM"', "DICOM file magic: 128-byte preamble"),
    ("bundle/monailabel_app/lib/study.py", 128, 'head[128:132] == b"DICM"', "DICOM file magic: 128-byte preamble"),
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


#: Tokens after which ``-`` is a sign, not a subtraction.
_BEFORE_UNARY = {"(", "[", "{", ",", "=", ":", "*=", "+=", "-=", "/=", "@=", "return", "lambda", "yield"}


def _signed_values(tokens: list[tokenize.TokenInfo]) -> Iterator[tuple[int, float | None]]:
    """(token index, value) with a unary minus folded into the number; None for anything else."""
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == tokenize.OP and t.string == "-" and i + 1 < len(tokens) and tokens[i + 1].type == tokenize.NUMBER:
            prev = tokens[i - 1] if i else None
            unary = prev is None or prev.string in _BEFORE_UNARY
            if unary:
                v = _number(tokens[i + 1].string)
                yield i, (None if v is None else -v)
                i += 2
                continue
        yield i, (_number(t.string) if t.type == tokenize.NUMBER else None)
        i += 1


def scan_source(source: str) -> list[tuple[int, str, str]]:
    """Findings in one module's source: (line, what, source line). Numbers of the frame in code (not in
    strings, docstrings or comments), LPS -> RAS sign flips ``[-1, -1, 1...]`` or ``*= -1``, and a
    definition of ``LPS_TO_RAS``."""
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


def _files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def _matches(entry: tuple[str, float, str, str], path: str, what: str, line: str) -> bool:
    v = _number(what)
    return entry[0] == path and v is not None and abs(v - float(entry[1])) < 1e-12 and entry[2] in line


@pytest.fixture(scope="module")
def findings() -> list[tuple[str, int, str, str]]:
    out = []
    for p in _files():
        rel = p.relative_to(REPO).as_posix()
        if rel == OWNER:
            continue
        out.extend((rel, line, what, text) for line, what, text in scan_source(p.read_text(encoding="utf-8")))
    return out


def test_no_frame_number_outside_the_frame_module(findings):
    entries = ALLOWED
    bad = [f for f in findings if not any(_matches(e, f[0], f[2], f[3]) for e in entries)]
    assert not bad, (
        "the output frame restated outside scripts/frame.py; read it from scripts.frame.FRAME (or a VolumeFrame "
        "passed in), or add an ALLOWED entry saying why the number is not the frame:\n"
        + "\n".join(f"  {path}:{line}: {what}: {text.strip()}" for path, line, what, text in bad)
    )


def test_allowed_entries_are_used_and_explained(findings):
    for entry in ALLOWED:
        assert entry[3].strip(), f"ALLOWED entry without a reason: {entry}"
        assert (REPO / entry[0]).is_file(), f"ALLOWED entry for a missing file: {entry}"
    stale = [e for e in ALLOWED if not any(_matches(e, f[0], f[2], f[3]) for f in findings)]
    assert not stale, "ALLOWED entries that match nothing any more (remove them):\n" + "\n".join(
        f"  {e[0]}: {e[1]} in {e[2]!r}" for e in stale
    )


def test_the_owner_holds_the_numbers():
    found = {what for _, what, _ in scan_source((REPO / OWNER).read_text(encoding="utf-8"))}
    assert {"128", "320.0", "1024.0", "2500.0", "LPS->RAS flip [-1, -1, 1]", "LPS_TO_RAS defined"} <= found

    from scripts.frame import FRAME

    assert (FRAME.shape, FRAME.size_mm, FRAME.spacing_mm, FRAME.hu_offset, FRAME.hu_range) == (
        128,
        320.0,
        2.5,
        1024.0,
        2500.0,
    )


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
def test_scanner_finds_planted_restatements(source, expected):
    assert [what for _, what, _ in scan_source(source)] == expected


def test_scanner_fails_on_a_planted_module(tmp_path, monkeypatch):
    """The whole check can fail: a module restating the frame is reported, with file and line."""
    planted = "def place(v, n=128):\n    return (v - 63.5) * 2.5\n"
    findings = [("scripts/planted.py", line, what, text) for line, what, text in scan_source(planted)]
    assert [(f[1], f[2]) for f in findings] == [(1, "128"), (2, "63.5"), (2, "2.5")]
    with pytest.raises(AssertionError, match=r"scripts/planted.py:1: 128"):
        test_no_frame_number_outside_the_frame_module(findings)
