"""The batch preparation workflow of ``configs/prepare.json``.

* :mod:`.case_writer` - one CT through the chain into a complete prepared case folder.
* :mod:`.case_batch` - a batch of cases through the case writer (this process or a worker pool, progress).
* :mod:`.workflow` - ``PrepareWorkflow``: discovery, split, the batch, ``datalist.json``, failures.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "CASE_FILES": "case_writer",
    "TMP_PREFIX": "case_writer",
    "is_case_complete": "case_writer",
    "complete_cases": "case_writer",
    "run_chain": "case_writer",
    "save_case": "case_writer",
    "prepare_case": "case_writer",
    "prepare_cases": "case_batch",
    "CaseProgress": "case_batch",
    "PrepareError": "workflow",
    "PrepareWorkflow": "workflow",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
