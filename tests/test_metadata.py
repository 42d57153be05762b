"""``configs/metadata.json`` and ``configs/logging.conf``: what MONAI and the Model Zoo check, offline.

The metadata is validated against the local copy of the MONAI bundle schema in
``bundle/tools/schemas`` (the file named by the metadata's ``schema`` URL), twice: with ``jsonschema``
directly and with ``monai.bundle.verify_metadata``, which downloads the schema only when the file at
``filepath`` is missing, so it runs offline once the local copy is put there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from conftest import missing

REPO = Path(__file__).resolve().parents[1]
META = REPO / "configs" / "metadata.json"
LOGGING_CONF = REPO / "configs" / "logging.conf"
SCHEMA_DIR = REPO / "bundle" / "tools" / "schemas"

# requirements.txt pins that metadata.json records in its own top-level fields, not in required_packages_version
TOP_LEVEL_PINS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
# metadata versions that differ from requirements.txt (pinned for Python 3.11) because the pin has no wheel for
# Python 3.10, the Model Zoo CI's: the newest release with wheels for 3.10 and 3.11 (checked against PyPI by
# `python -m bundle zoo_check`, step requirements_py310)
PY310_VERSIONS = {"pillow": "12.3.0", "scikit-image": "0.25.2"}


@pytest.fixture(scope="module")
def metadata() -> dict:
    with open(META, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def schema_file(metadata) -> Path:
    name = metadata["schema"].rsplit("/", 1)[-1]
    path = SCHEMA_DIR / name
    if not path.is_file():
        missing(f"MONAI bundle schema {name} not found at {path} (it ships with bundle/tools/schemas)")
    return path


def requirement_pins() -> dict[str, str]:
    """``name==version`` lines of requirements.txt (comments and blank lines ignored), names lower-cased."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        assert m, f"requirements.txt: '{line}' is not pinned as name==version"
        pins[m.group(1).lower()] = m.group(2)
    return pins


def test_metadata_valid_against_schema(metadata, schema_file):
    with open(schema_file, encoding="utf-8") as f:
        schema = json.load(f)
    # the schema declares draft 2019-09, which jsonschema 3.2 does not know; like MONAI's verify_metadata
    # (which falls back to the latest draft it has) validate with draft 7: the schema uses only $ref/$defs,
    # types and required, which draft 7 evaluates the same way
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(metadata)
    for key in schema["required"]:
        assert key in metadata, key
    # nested tensor descriptions are really checked (the $ref into $defs resolves): a string channel count fails
    broken = json.loads(json.dumps(metadata))
    broken["network_data_format"]["inputs"]["image"]["num_channels"] = "2"
    with pytest.raises(jsonschema.ValidationError, match="is not valid under any of the given schemas"):
        validator.validate(broken)


def test_verify_metadata_offline(metadata, schema_file, tmp_path):
    """``monai.bundle.verify_metadata`` with the local schema copy in place (no download happens)."""
    from monai.bundle import verify_metadata

    local = tmp_path / "schema.json"
    shutil.copy(schema_file, local)
    md5 = hashlib.md5(local.read_bytes()).hexdigest()
    verify_metadata(meta_file=str(META), filepath=str(local), hash_val=md5, hash_type="md5")

    # the same call rejects metadata that lacks a required key: it really validates
    broken = dict(metadata)
    del broken["network_data_format"]
    bad = tmp_path / "bad_metadata.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(bad), filepath=str(local), hash_val=md5, hash_type="md5")


def test_version_has_changelog_entry(metadata):
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"]), metadata["version"]
    assert metadata["version"] in metadata["changelog"], "the Model Zoo wants the current version in changelog"
    assert metadata["changelog"][metadata["version"]].strip()


def test_versions_match_requirements(metadata):
    pins = requirement_pins()
    for package, key in TOP_LEVEL_PINS.items():
        assert metadata[key] == pins[package], f"{key} {metadata[key]} != requirements.txt {package}=={pins[package]}"
    expected = {name: PY310_VERSIONS.get(name, version) for name, version in pins.items() if name not in TOP_LEVEL_PINS}
    assert metadata["required_packages_version"] == expected
    for name, version in PY310_VERSIONS.items():  # an older release than the pin
        assert int(version.split(".")[0]) <= int(pins[name].split(".")[0]), (name, version, pins[name])


def test_supported_apps_declares_monailabel(metadata):
    """The zoo's property check runs once per supported app: an empty mapping checks nothing."""
    dev = (REPO / "requirements-dev.txt").read_text()
    pinned = re.search(r"^monailabel==(\S+)", dev, re.M)
    assert pinned, "requirements-dev.txt pins monailabel"
    assert metadata["supported_apps"] == {"monailabel": pinned.group(1)}


def test_network_data_format(metadata):
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 2 and image["spatial_shape"] == [128, 128] and image["dtype"] == "float32"
    assert image["channel_def"] == {"0": "PA", "1": "lateral"} and image["modality"] == "XR"
    assert image["value_range"] == [0, 1] and image["is_patch_data"] is False
    assert pred["num_channels"] == 1 and pred["spatial_shape"] == [128, 128, 128] and pred["dtype"] == "float32"
    assert pred["modality"] == "CT" and pred["value_range"] == [0, 1]
    assert any("ICASSP 2023" in ref and "Perspective Projection" in ref for ref in metadata["references"])


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def test_logging_conf_accepted(restore_logging, tmp_path, capsys):
    """``fileConfig`` accepts it, and so does MONAI 1.6's bundle workflow (which allows only stdlib classes)."""
    import logging.config

    logging.config.fileConfig(LOGGING_CONF, disable_existing_loggers=False)
    assert [type(h) for h in logging.getLogger().handlers] == [logging.StreamHandler]

    from monai.bundle import ConfigWorkflow

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"answer": 42}))
    workflow = ConfigWorkflow(
        config_file=str(config), meta_file=str(META), logging_file=str(LOGGING_CONF), workflow_type=None
    )
    assert workflow.parser.get("answer") == 42
    logging.getLogger("perx2ct.test").info("logging.conf in use")
    assert " - perx2ct.test - INFO - logging.conf in use" in capsys.readouterr().out
