"""Cross-cutting helpers of the bundle's workflows: atomic writes, the command line as the user typed it,
torchrun shards, the worker pool, the configs' default ``bundle_root``, caches of recent cases, lazy re-exports,
torch for tensors without importing it.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "atomic_write_bytes": "atomic",
    "write_json_atomic": "atomic",
    "save_nifti_atomic": "atomic",
    "to_uint8": "atomic",
    "save_grey_png": "atomic",
    "bundle_root": "bundle_paths",
    "flag": "command_line",
    "command_line": "command_line",
    "shell_quote": "command_line",
    "resume_command": "command_line",
    "Shards": "shards",
    "RANK_FILE": "shards",
    "is_rank0": "shards",
    "RecentCache": "recent",
    "torch_of": "optional_torch",
    "WorkerPool": "worker_pool",
    "die_with_parent": "worker_pool",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
