"""``python -m bundle verify``: the MONAI Model Zoo's bundle checks, run locally and offline.

Checks (one ``PASS``/``FAIL``/``WARN`` line each; exit status 1 if any fails):

* ``required_files``: ``configs/metadata.json``, ``configs/inference.json``, ``LICENSE``,
  ``docs/README.md``, ``docs/data_license.txt``; ``WARN`` for the preferred ``configs/train.json``,
  ``configs/evaluate.json``, ``configs/logging.conf``, ``large_files.yml``.
* ``changelog``: metadata ``version`` is a key of ``changelog`` (the Model Zoo's ``verify_version_changes``).
* ``metadata_schema``: ``monai.bundle.verify_metadata`` against a *local* copy of the schema
  (``--schema PATH``; default ``bundle/schemas/<schema file named in metadata>``, shipped with the bundle tools).
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

import hashlib
import json
import logging
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["CheckResult", "run_checks", "verify", "REQUIRED_FILES", "PREFERRED_FILES", "README_SECTIONS"]

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
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")


class CheckError(Exception):
    """A check's specific failure message (printed as is)."""


@dataclass
class CheckResult:
    name: str
    status: str  # "PASS", "FAIL" or "WARN"
    message: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def line(self) -> str:
        return f"{self.status:4s}  {self.name:17s} {self.message} ({self.seconds:.1f} s)"


@contextmanager
def _bundle_import_path(root: Path):
    """``import scripts`` resolves to ``root/scripts`` inside the block (another copy is unloaded)."""
    root_s = str(root)
    saved = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    loaded = saved.get("scripts")
    foreign = loaded is not None and Path(str(getattr(loaded, "__file__", ""))).resolve().parent.parent != root
    if foreign:
        for k in saved:
            del sys.modules[k]
    sys.path.insert(0, root_s)
    try:
        yield
    finally:
        sys.path.remove(root_s)
        if foreign:
            for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
                del sys.modules[k]
            sys.modules.update(saved)


def _verify_net_in_out(root: Path, **kwargs: Any) -> None:
    """MONAI's ``verify_net_in_out`` on ``network_def`` of ``root``'s ``configs/inference.json`` and
    ``configs/metadata.json`` (``kwargs``: its device and config overrides), a failure as one CheckError line.
    Call it inside ``_bundle_import_path(root)``."""
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001
        raise CheckError(f"verify_net_in_out: {type(e).__name__}: {e}") from None


def _metadata(root: Path) -> dict:
    path = root / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"{path} not found") from None
    except json.JSONDecodeError as e:
        raise CheckError(f"{path} is not valid JSON: {e}") from None


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


def check_changelog(root: Path, **_: Any) -> tuple[str, str]:
    meta = _metadata(root)
    if "version" not in meta:
        raise CheckError("'version' is missing in configs/metadata.json")
    if not isinstance(meta.get("changelog"), dict):
        raise CheckError("'changelog' (a mapping version -> description) is missing in configs/metadata.json")
    version = meta["version"]
    if version not in meta["changelog"]:
        raise CheckError(
            f"version {version} is not a key of 'changelog' in configs/metadata.json "
            f"(changelog has: {', '.join(meta['changelog']) or 'nothing'}); add a \"{version}\" entry"
        )
    return "PASS", f"version {version} is in changelog"


#: Local copies of MONAI's bundle metadata schemas (the file named by metadata.json's ``schema`` URL), so that
#: verification needs no network: MONAI's own schema file, Apache-2.0, as published by Project-MONAI.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def _schema_path(root: Path, schema: str | None, meta: dict) -> Path:
    if schema:
        return Path(schema).expanduser().resolve()
    url = meta.get("schema")
    if not url:
        raise CheckError("metadata has no 'schema' URL")
    return (SCHEMA_DIR / url.rstrip("/").rsplit("/", 1)[-1]).resolve()


def check_metadata_schema(root: Path, schema: str | None = None, **_: Any) -> tuple[str, str]:
    from monai.bundle import verify_metadata

    meta = _metadata(root)
    path = _schema_path(root, schema, meta)
    if not path.is_file():
        raise CheckError(
            f"schema file not found: {path} (no download is attempted); pass --schema PATH to a local copy"
        )
    logging.getLogger("monai.apps").setLevel(logging.WARNING)
    try:
        # with an existing `filepath` and no hash, verify_metadata uses the file and downloads nothing
        verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(path), create_dir=False)
    except ValueError as e:
        raise CheckError(f"metadata does not match {path.name}: {e}") from None
    return "PASS", f"configs/metadata.json is valid against {path.name}"


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
            digest = hashlib.new(str(e["hash_type"]).lower(), local.read_bytes()).hexdigest()
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
    with _bundle_import_path(root):
        _verify_net_in_out(root, device=device, **overrides)
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
    with tempfile.TemporaryDirectory(prefix="perx2ct_verify_") as tmp, _bundle_import_path(root):
        parser = _net_parser(root, model_preset, ckpt_file)
        if ckpt_file:
            ckpt = str(Path(ckpt_file).resolve())
            if not Path(ckpt).is_file():
                raise CheckError(f"--ckpt_file {ckpt} not found")
            source = f"checkpoint {ckpt_file}"
        else:
            torch.manual_seed(0)
            ckpt = str(Path(tmp) / "model.pt")
            torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
            source = "a freshly initialised checkpoint"
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
        f"max |eager - scripted| = {diff:.2g} <= {atol:g}",
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
    results = []
    for name in names:
        start = time.perf_counter()
        try:
            status, message = CHECKS[name](root, **options)
        except CheckError as e:
            status, message = "FAIL", str(e)
        except Exception as e:  # noqa: BLE001 - an unexpected error is a failure with its traceback's last frame
            tb = traceback.extract_tb(e.__traceback__)[-1]
            status, message = "FAIL", f"{type(e).__name__}: {e} (at {Path(tb.filename).name}:{tb.lineno})"
        results.append(CheckResult(name, status, message, time.perf_counter() - start))
    return results


def report(results: list[CheckResult], command: str, width: int = 17) -> None:
    """Print one line per check (name padded to ``width``), then ``<command>: N passed, M failed``;
    exit 1 when any failed."""
    for r in results:
        print(r.line().replace(f"{r.name:17s}", f"{r.name:{width}s}", 1), flush=True)
    failed = [r.name for r in results if not r.ok]
    print(
        f"{command}: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    if failed:
        sys.exit(1)


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
        schema: local copy of the metadata schema (default ``bundle/schemas/<file named in metadata>``).
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
