"""PerX2CT MONAI bundle: the bundle's Python package (configs import it as ``scripts``).

The map, in the order the data flows (``docs/architecture.md`` draws it):

* :mod:`scripts.ct` - chest CT input: DICOM series / TCIA trees / files, NIfTI, MHA -> LPS HU, checked.
* :mod:`scripts.projection` - the one cone-beam ``ProjectionGeometry`` and the renderers that use it (attenuation,
  ITK reference, batched torch renderer); ``python -m scripts drr``.
* :mod:`scripts.transforms` - MONAI transforms: CT loading and normalisation, the target, DRRs, radiographs,
  on-the-fly rigid views.
* :mod:`scripts.prepare` - the batch preparation workflow of ``configs/prepare.json`` (case writer, batches).
* :mod:`scripts.data` - dataset discovery, the split and ``datalist.json``, datalists, the training slice sampler.
* :mod:`scripts.assets` - what the bundle fetches, hash-checked: example CTs, pretrained weights.
* :mod:`scripts.networks` - the perspective sampler, encoder, decoder, PerX2CT and its presets; checkpoints and
  their sidecars; the importer of the authors' weights.
* :mod:`scripts.training` - the loss and the validation metric that picks the checkpoint.
* :mod:`scripts.inference` - how the network is called (inferers) and what inference writes.
* :mod:`scripts.evaluation` - paper-convention and honest metrics, montages.
* :mod:`scripts.handlers` - Ignite handlers of the workflows (checkpoints, console, clean stops, images, ...).
* :mod:`scripts.utils` - atomic writes, the command line, torchrun shards, the worker pool, ``bundle_root``.

Cross-cutting, in the package root: :mod:`scripts.frame` (the output volume's frame), :mod:`scripts.slicing`
(where a rendered slice lies in it) and :mod:`scripts.errors` (one line per expected error; the hook is installed
by the entry points: ``python -m scripts`` and each config's ``initialize``, never on import).
"""

from scripts.utils.bundle_paths import bundle_version

__version__ = bundle_version()  # configs/metadata.json, the one place that holds it
