"""The tooling around the bundle (not part of the bundle archive): ``python -m bundle <command>``.

* :mod:`.checks` - what the tools share: the check result and report, the metadata and schema checks, MONAI's
  ``verify_net_in_out`` on the bundle's ``network_def``.
* :mod:`.verify` - ``python -m bundle verify``: the Model Zoo's checks, run locally and offline.
* :mod:`.package` - ``python -m bundle package``: the bundle archive (and ``large_files.yml``).
* :mod:`.zoo_checks` - ``python -m bundle zoo_check``: the Model Zoo's CI steps on the packaged bundle.
* :mod:`.lint` - ``python -m bundle lint``: the Model Zoo's format gate, run in the zoo's layout, and the
  project's own code checks (:mod:`.code_checks`).
* ``schemas/``: local copies of MONAI's bundle metadata schemas; ``zoo_setup.cfg``: the Model Zoo's ``setup.cfg``.

``scripts`` is put on the import path by :func:`bundle.monailabel_app.lib.scripts_path.scripts_on_path`, the
helper the MONAI Label app uses too (why it lives there: that module's docstring).
"""
