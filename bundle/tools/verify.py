"""``python -m bundle verify``: the MONAI Model Zoo's bundle checks, run locally and offline.

Checks (one ``PASS``/``FAIL``/``WARN`` line each; exit status 1 if any fails):

* ``required_files``: ``configs/metadata.json``, ``configs/inference.json``, ``LICENSE``,
  ``docs/README.md``, ``docs/data_license.txt``; ``WARN`` for the preferred ``configs/train.json``,
  ``configs/evaluate.json``, ``configs/logging.conf``, ``large_files.yml``.
* ``changelog``: metadata ``version`` is a key of ``changelog`` (the Model Zoo's ``verify_version_changes``).
* ``metadata_schema``: ``monai.bundle.verify_metadata`` against a *local* copy of the schema
  (``--schema PATH``; default ``bundle/tools/schemas/<schema file named in metadata>``, shipped with the tools).
* ``large_files``: ``large_files.yml`` parses; every entry has ``path``, ``url``, a non-empty ``hash_val``
  and ``hash_type``; a local file must match its hash. An empty list (nothing published) is a ``WARN``.
* ``inference_config``: ``configs/inference.json`` parses and has the ids MONAI's inference properties
  and MONAI Label need.
* ``net_in_out``: ``monai.bundle.verify_net_in_out network_def`` with ``--model_preset`` (default ``small``):
  channels and dtype of ``network_data_format``.
* ``ckpt_export``: ``monai.bundle.ckpt_export`` to TorchScript with ``--ckpt_file`` (or a freshly
  initialised checkpoint of the preset), reload with ``torch.jit.load``, compare with eager output
  (max abs difference <= ``--atol``, 1e-4); the eager output's full shape must equal
  ``network_data_format.outputs.pred`` (1, C, *spatial_shape) and be finite.
* ``readme_sections``: ``docs/README.md`` has a heading for every Model Zoo template section.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from scripts.assets.hashing import HASH_TYPES, file_digest
from scripts.networks.checkpoint import read_info, recipe_line

from bundle.monailabel_app.lib.scripts_path import scripts_on_path
from bundle.tools.checks import (
    CheckError,
    CheckResult,
    check_changelog,
    check_metadata_schema,
    report,
    run_check,
    verify_net_in_out,
)

__all__ = ["run_checks", "verify", "REQUIRED_FILES", "PREFERRED_FILES", "README_SECTIONS"]

REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "LICENSE",
    "docs/README.md",
    "docs/data_license.txt",
)
PREFERRED_FILES = ("configs/train.json", "configs/evaluate.json", "configs/logging.conf", "large_files.yml")
README_SECTIONS = (
    "Authors",
    "Tags",
    "Model Description",
    "Data",
    "Preprocessing",
    "Training configuration",
    "Performance",
    "Additional Usage Steps",
    "System Configuration",
    "Limitations",
    "Citation",
    "References",
)
INFERENCE_IDS = (
    "bundle_root",
    "device",
    "network_def",
    "preprocessing",
    "inferer",
    "postprocessing",
    "dataset",
    "evaluator",
)
LARGE_FILE_FIELDS = ("path", "url", "hash_val", "hash_type")


# ------------------------------------------------------------------------------------------- checks
def check_required_files(root: Path, **_: Any) -> tuple[str, str]:
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise CheckError(f"missing required file(s): {', '.join(missing)}")
    absent = [f for f in PREFERRED_FILES if not (root / f).is_file()]
    if absent:
        return (
            "WARN",
            f"all {len(REQUIRED_FILES)} required files present; preferred file(s) missing: {', '.join(absent)}",
        )
    return "PASS", f"{len(REQUIRED_FILES)} required and {len(PREFERRED_FILES)} preferred files present"


def check_large_files(root: Path, **_: Any) -> tuple[str, str]:
    from monai.bundle import ConfigParser

    path = root / "large_files.yml"
    if not path.is_file():
        return "WARN", "large_files.yml absent (preferred: where models/model.pt is downloaded from)"
    try:
        content = ConfigParser.load_config_file(str(path))
    except Exception as e:  # noqa: BLE001 - report the parser's message
        raise CheckError(f"large_files.yml does not parse: {e}") from None
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise CheckError("large_files.yml needs a list 'large_files: [{path, url, hash_val, hash_type}]'")
    if not entries:
        return "WARN", "large_files.yml lists no file: no weights published (python -m bundle package --url URL)"
    notes = []
    for i, e in enumerate(entries):
        missing = [f for f in LARGE_FILE_FIELDS if not isinstance(e, dict) or f not in e]
        if missing:
            raise CheckError(f"large_files.yml entry {i} lacks field(s): {', '.join(missing)}")
        if str(e["hash_type"]).lower() not in HASH_TYPES:
            raise CheckError(
                f"large_files.yml entry {i} ({e['path']}): hash_type {e['hash_type']!r} not one of {HASH_TYPES}"
            )
        if not str(e["url"]).startswith(("https://", "http://", "file://")):
            raise CheckError(f"large_files.yml entry {i} ({e['path']}): url must be http(s) or file, got {e['url']!r}")
        if not e["hash_val"]:
            raise CheckError(
                f"large_files.yml entry {i} ({e['path']}): empty hash_val; write the entry with "
                "`python -m bundle package --ckpt_file CKPT --url URL`"
            )
        local = root / str(e["path"])
        if local.is_file():
            digest = file_digest(local, e["hash_type"])
            if digest != str(e["hash_val"]):
                raise CheckError(
                    f"{e['path']}: {e['hash_type']} {digest} differs from large_files.yml hash_val {e['hash_val']}"
                )
            notes.append(f"{e['path']} matches its hash")
    n = len(entries)
    return "PASS", f"{n} entr{'y' if n == 1 else 'ies'}" + (f"; {'; '.join(notes)}" if notes else "")


def check_inference_config(root: Path, **_: Any) -> tuple[str, str]:
    from monai.bundle import ConfigParser

    path = root / "configs" / "inference.json"
    try:
        parser = ConfigParser(ConfigParser.load_config_file(str(path)))
    except Exception as e:  # noqa: BLE001
        raise CheckError(f"{path} does not parse: {e}") from None
    missing = [k for k in INFERENCE_IDS if k not in parser.config]
    if missing:
        raise CheckError(f"configs/inference.json lacks id(s): {', '.join(missing)}")
    return "PASS", f"configs/inference.json has {', '.join(INFERENCE_IDS)}"


def _net_parser(root: Path, model_preset: str | None, ckpt_file: str | None = None):
    """The inference config; with ``ckpt_file`` its ``ckpt_path``, so the network follows that checkpoint's
    sidecar (``scripts.networks.checkpoint.read_info``) with no preset flag."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    parser["ckpt_path"] = str(Path(ckpt_file).resolve()) if ckpt_file else ""
    if model_preset:
        parser["model_preset"] = model_preset
    return parser


def _preset_name(parser) -> str:
    """The network preset the config builds (``network_info`` when the config follows a checkpoint)."""
    if "network_info" in parser:
        return str(parser.get_parsed_content("network_info")["model_preset"])
    return str(parser.get_parsed_content("model_preset"))


def check_net_in_out(
    root: Path, model_preset: str | None = "small", device: str = "cpu", ckpt_file: str | None = None, **_: Any
) -> tuple[str, str]:
    # no checkpoint: "" so that a models/model.pt (and its sidecar) in the bundle does not decide the network
    overrides = {"bundle_root": str(root), "ckpt_path": str(Path(ckpt_file).resolve()) if ckpt_file else ""}
    if model_preset:
        overrides["model_preset"] = model_preset
    with scripts_on_path(root):
        verify_net_in_out(root, device=device, **overrides)
        preset = _preset_name(_net_parser(root, model_preset, ckpt_file))
    # the full output shape is checked by ckpt_export's eager run (one forward pass less here)
    return "PASS", f"preset {preset}: channels and dtype of network_data_format verified"


def check_ckpt_export(
    root: Path,
    ckpt_file: str | None = None,
    model_preset: str | None = "small",
    atol: float = 1e-4,
    device: str = "cpu",
    use_trace: bool = False,
    **_: Any,
) -> tuple[str, str]:
    import torch
    from monai.bundle import ckpt_export

    # no checkpoint: "" so that a models/model.pt (and its sidecar) in the bundle does not decide the network
    overrides = {"bundle_root": str(root), "ckpt_path": str(Path(ckpt_file).resolve()) if ckpt_file else ""}
    if model_preset:
        overrides["model_preset"] = model_preset
    with tempfile.TemporaryDirectory(prefix="perx2ct_verify_") as tmp, scripts_on_path(root):
        parser = _net_parser(root, model_preset, ckpt_file)
        if ckpt_file:
            ckpt = str(Path(ckpt_file).resolve())
            if not Path(ckpt).is_file():
                raise CheckError(f"--ckpt_file {ckpt} not found")
            source = f"checkpoint {ckpt_file}"
            recipe = f"; {recipe_line(read_info(ckpt), ckpt_file)}"  # the training recipe its sidecar records
        else:
            torch.manual_seed(0)
            ckpt = str(Path(tmp) / "model.pt")
            torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
            source, recipe = "a freshly initialised checkpoint", ""
        ts_path = str(Path(tmp) / "model.ts")
        try:
            ckpt_export(
                net_id="network_def",
                filepath=ts_path,
                ckpt_file=ckpt,
                meta_file=str(root / "configs" / "metadata.json"),
                config_file=str(root / "configs" / "inference.json"),
                use_trace=use_trace,
                **({"input_shape": [1, *_input_shape(parser)]} if use_trace else {}),
                **overrides,
            )
        except Exception as e:  # noqa: BLE001
            raise CheckError(
                f"ckpt_export ({'trace' if use_trace else 'script'}) failed ({source}, preset {_preset_name(parser)}): "
                f"{type(e).__name__}: {e}"
            ) from None
        ts = torch.jit.load(ts_path, map_location=device).eval()
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
        net = net.to(device).eval()
        inp = parser.get("_meta_#network_data_format#inputs#image")
        x = torch.rand(1, inp["num_channels"], *inp["spatial_shape"], generator=torch.Generator().manual_seed(1)).to(
            device
        )
        with torch.no_grad():
            eager, scripted = net(x), ts(x)
    out = parser.get("_meta_#network_data_format#outputs#pred")
    expected = (1, int(out["num_channels"]), *(int(v) for v in out["spatial_shape"]))
    if tuple(eager.shape) != expected:
        raise CheckError(
            f"network output shape {tuple(eager.shape)} != {expected} from network_data_format.outputs.pred"
        )
    if not torch.isfinite(eager).all():
        raise CheckError("network output has non-finite values")
    diff = float((eager - scripted).abs().max())
    if tuple(eager.shape) != tuple(scripted.shape) or not diff <= atol:
        raise CheckError(
            f"TorchScript output differs from eager: shapes {tuple(eager.shape)} / {tuple(scripted.shape)}, "
            f"max abs diff {diff:.3g} > {atol:g}"
        )
    return (
        "PASS",
        f"TorchScript ({'traced' if use_trace else 'scripted'}) from {source} reloads; "
        f"max |eager - scripted| = {diff:.2g} <= {atol:g}{recipe}",
    )


def _input_shape(parser) -> list[int]:
    inp = parser.get("_meta_#network_data_format#inputs#image")
    return [int(inp["num_channels"]), *(int(s) for s in inp["spatial_shape"])]


def check_readme_sections(root: Path, **_: Any) -> tuple[str, str]:
    path = root / "docs" / "README.md"
    if not path.is_file():
        raise CheckError("docs/README.md not found")
    headings = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            text = line.strip().lstrip("#").strip().rstrip(":").strip().lower()
            headings.add(text)
    missing = [s for s in README_SECTIONS if not any(h == s.lower() or h.startswith(s.lower() + " ") for h in headings)]
    if missing:
        raise CheckError(f"docs/README.md lacks section heading(s): {', '.join(missing)}")
    return "PASS", f"all {len(README_SECTIONS)} template sections present"


CHECKS: dict[str, Callable[..., tuple[str, str]]] = {
    "required_files": check_required_files,
    "changelog": check_changelog,
    "metadata_schema": check_metadata_schema,
    "large_files": check_large_files,
    "inference_config": check_inference_config,
    "readme_sections": check_readme_sections,
    "net_in_out": check_net_in_out,
    "ckpt_export": check_ckpt_export,
}


def run_checks(bundle_root: str | Path = ".", only: list[str] | None = None, **options: Any) -> list[CheckResult]:
    """Run the checks (all, or the names in ``only``) and return their results; never raises."""
    root = Path(bundle_root).resolve()
    names = list(CHECKS) if not only else list(only)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; available: {', '.join(CHECKS)}")
    return [run_check(name, CHECKS[name], root, **options) for name in names]


def verify(
    bundle_root: str = ".",
    schema: str | None = None,
    ckpt_file: str | None = None,
    model_preset: str | None = None,
    only: str | list[str] | None = None,
    device: str = "cpu",
    atol: float = 1e-4,
    use_trace: bool = False,
) -> None:
    """Run the Model Zoo's checks on the bundle at ``bundle_root``; exit status 1 if any fails.

    Args:
        bundle_root: the bundle (repository) root.
        schema: local copy of the metadata schema (default ``bundle/tools/schemas/<file named in metadata>``).
        ckpt_file: checkpoint for ``ckpt_export`` (default: a freshly initialised one).
        model_preset: network preset for ``net_in_out``/``ckpt_export`` (default ``small`` without
            ``--ckpt_file``, the config's preset with it).
        only: comma-separated subset of checks.
        device: device for the network checks.
        atol: tolerance of the eager/TorchScript comparison.
        use_trace: export with ``torch.jit.trace`` instead of scripting (the Model Zoo's default).
    """
    if model_preset is None:
        model_preset = None if ckpt_file else "small"
    for name in ("monai.bundle.scripts", "monai.apps.utils", "monai.apps"):
        logging.getLogger(name).setLevel(logging.WARNING)  # MONAI's per-call input summaries
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else (list(only) if only else None)
    results = run_checks(
        bundle_root,
        names,
        schema=schema,
        ckpt_file=ckpt_file,
        model_preset=model_preset,
        device=device,
        atol=atol,
        use_trace=use_trace,
    )
    report(results, "verify")
