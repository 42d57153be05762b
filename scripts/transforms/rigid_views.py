"""On-the-fly training views: a random rigid motion of the patient, both X-rays re-rendered, the target moved.

Prepared cases carry one fixed PA and one fixed lateral DRR per CT, always perfectly centred and with the
same exposure. :class:`RandRigidViewsd` replaces them, per sample, by views of the *moved* patient
rendered with the torch projector (:mod:`scripts.projection.torch_renderer`) through the same
:class:`~scripts.projection.geometry.ProjectionGeometry` as everything else, moves the training target with the
same motion (so image and target stay consistent), and varies the intensities as radiographs vary
(per-view gain and gamma, noise).

Motion (LPS mm, about the isocentre = the cube's centre): rotations ``(rx, ry, rz)`` about the left,
posterior and superior axes drawn uniformly in ``[-max_rotation_deg, max_rotation_deg]`` per axis, then a
shift drawn uniformly in ``[-max_shift_mm, max_shift_mm]`` per axis: a patient point ``x`` moves to
``R x + shift`` (:func:`scripts.projection.torch_renderer.rigid_motion`). The machine (source, detector) stays put.

Views are rendered from the 1 mm HU cube under ``ct_key`` when the item has one (the cube the DRRs of
prepared cases were made from), else from the target itself (back to HU with
:meth:`~scripts.frame.VolumeFrame.target_to_hu`; coarser, 2.5 mm, and clipped at 1476 HU). Rendering moves
the rays, not the volume (exact for a rigid motion). The raw line integrals then go through the one
radiograph post-processing (:func:`scripts.transforms.radiograph.postprocess_radiograph`: normalise, 8-bit, resize to
128 x 128, 8-bit), then the intensity variation ``clip(gain * x ** gamma + noise, 0, 1)``, quantised to
8 bits again (the network's input convention). The target (and any ``move_keys``) is resampled trilinearly
at the moved positions (outside the cube: air).

Named settings (:data:`scripts.transforms.view_settings.VIEW_SETTINGS`, :meth:`RandRigidViewsd.from_setting`):
``fixed`` is the behaviour above, bit-exact (``configs/onthefly.json``); ``clinical`` (``configs/clinical.json``)
also draws, per sample and per view, a clinical acquisition (SID, source-to-isocentre distance, detector size and
offset) and a processed-radiograph appearance (:mod:`scripts.transforms.appearance`: scatter haze, quantum noise,
detector blur, log or linear response, unsharp masking, collimation), renders the views with that per-view
geometry (:meth:`RandRigidViewsd.sample_geometry`, one :class:`ProjectionGeometry`), and the item carries it
(:data:`GEOMETRY_KEY`, ``(V, 6)``) so that :class:`RandRigidViewsBatch` hands the same geometry objects to the
training step (keyword ``geometry``), whose inferer gives them to the network's sampler as its camera.

Plugging in: the transform works on the items the training loader yields, ``{"image": (2, 128, 128),
"label": (1, 128, 128, 128), "ct_1mm"?: (1, 320, 320, 320) HU}`` and is appended to the training
preprocessing after the cached (deterministic) part; ``configs/onthefly.json`` does that over
``configs/train.json``. It is Randomizable, so ``PersistentDataset`` caches everything before it and runs it
fresh for every sample.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scripts.frame import FRAME, VolumeFrame
from scripts.projection.attenuation import hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.torch_renderer import DEFAULT_MAX_SAMPLES, project, rigid_motion
from scripts.slicing import slice_positions
from scripts.transforms.appearance import (
    appearance_ranges,
    collimate,
    detector_physics,
    display_processing,
    draw_appearance,
)
from scripts.transforms.radiograph import VIEW_SHAPE, postprocess_radiograph, quantize
from scripts.transforms.target import area_downsample
from scripts.transforms.view_settings import acquisition_array, draw_acquisitions, geometry_from_array, view_setting
from scripts.utils.recent import RecentCache
from torch.utils.data import Dataset

__all__ = [
    "RandRigidViewsd",
    "RandRigidViewsDataset",
    "RandRigidViewsBatch",
    "move_volume",
    "vary_intensity",
    "GEOMETRY_KEY",
]

#: Key of an item's / a batch's per-view acquisition ``(V, 6)`` / ``(N, V, 6)`` float64
#: (:data:`scripts.transforms.view_settings.ACQUISITION_FIELDS`) when the views were rendered with drawn geometries.
GEOMETRY_KEY = "view_geometry"
#: Cases whose render cube (HU and attenuation, 16 MB at 128^3) a loader worker, and the batch renderer per device,
#: keep; least recently used dropped first. Peak memory then stays flat in the number of cases (issue 23); a case
#: loaded again costs one .npy read and a conversion (tens of ms), against ~0.1 s of rendering per sample.
RENDER_CASES = 16


def _plain(x) -> torch.Tensor:
    """A plain tensor (MetaTensor's metadata dropped): the transform's outputs are plain, as the loader's."""
    t = torch.as_tensor(x)
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _triple(value, what: str) -> np.ndarray:
    a = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    if np.any(a < 0):
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return a


def _range(value, what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0 < lo <= hi:
        raise ValueError(f"{what} must be (low, high) with 0 < low <= high, got {value!r}")
    return lo, hi


def move_volume(volume: torch.Tensor, motion: np.ndarray, spacing_mm: float, pad_value: float = 0.0) -> torch.Tensor:
    """Resample a centred cube after a rigid motion of its content (trilinear).

    Args:
        volume: ``(C, N, N, N)`` on LPS axes, voxel ``(i, j, k)`` at ``((i, j, k) - (N - 1) / 2) * spacing_mm``
            relative to the isocentre.
        motion: 4x4 rigid motion about the isocentre, mm (content at ``x`` moves to ``motion @ x``).
        spacing_mm: voxel size, mm.
        pad_value: value where the moved content leaves nothing (outside the original cube).

    Returns:
        ``(C, N, N, N)`` float32: ``out(y) = volume(motion^-1 y)``.
    """
    c, n = volume.shape[0], volume.shape[-1]
    dev = volume.device
    inv = torch.as_tensor(np.linalg.inv(np.asarray(motion, dtype=np.float64)), dtype=torch.float32, device=dev)
    centre = (n - 1) / 2
    idx = (torch.arange(n, device=dev, dtype=torch.float32) - centre) * float(spacing_mm)
    y = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), dim=-1)  # (N, N, N, 3) mm, LPS
    q = y @ inv[:3, :3].T + inv[:3, 3]  # mm in the unmoved cube
    g = (q / float(spacing_mm)) / centre  # align_corners=True normalised, (x, y, z) order
    grid = g.flip(-1)[None]  # grid_sample wants (W, H, D) = (z, y, x) for a (D=X, H=Y, W=Z) input
    x = volume.float()[None] - pad_value
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0] + pad_value
    return out.reshape(c, n, n, n)


def vary_intensity(
    x: torch.Tensor, gain: float, gamma: float, noise: torch.Tensor | None, bits: int | None = 8
) -> torch.Tensor:
    """Radiograph-like variation of one ``[0, 1]`` image: ``clip(gain * x ** gamma + noise, 0, 1)``, quantised."""
    y = gain * x.clamp(0.0, 1.0) ** gamma
    if noise is not None:
        y = y + noise
    y = y.clamp(0.0, 1.0)
    return quantize(y, bits) if bits is not None else y


class RandRigidViewsd(Randomizable, MapTransform):
    """Per sample: rigid motion of the patient, both views re-rendered, target moved, intensities varied.

    Size: MONAI's ``Randomizable`` keeps the draw (``randomize``) and its use (``__call__``) in one object; the
    motion, the re-rendering and the intensity changes all read the same draw.

    Args:
        keys: ``(image_key, label_key)`` (default ``("image", "label")``): the views ``(V, H, W)`` in [0, 1]
            are replaced, the target ``(1, N, N, N)`` in the frame's target scale is moved.
        geometry: the projection geometry (its isocentre is ignored: the cube's centre is the isocentre).
        views: the views, in the channel order of ``image``.
        ct_key: key of the 1 mm HU cube ``(1, M, M, M)`` centred on the isocentre to render from, when
            present (else the target is rendered).
        move_keys: further centred HU cubes to move with the patient (e.g. ``["ct_1mm"]`` when a later
            transform cuts 1 mm targets from it); padded with -1024 HU.
        prob: probability of applying the whole transform to a sample (else it passes unchanged).
        max_shift_mm: bound of the isocentre shift per axis (x, y, z), mm; one number for all (default 5).
        max_rotation_deg: bound of the rotation about each axis, degrees; one number for all (default 3).
        gain_range, gamma_range: per-view gain and gamma drawn uniformly (log-uniformly for gamma).
        noise_std: standard deviation of additive Gaussian noise on the [0, 1] image (0: none).
        render_shape: detector ``(rows, cols)`` to render at before post-processing (default the
            geometry's, 320 x 320 as the prepared DRRs; 128 x 128 renders 6x faster).
        output_shape: ``(H, W)`` of the views (default :data:`scripts.transforms.radiograph.VIEW_SHAPE`, 128 x 128).
        quantize_bits: 8 (the network's 8-bit input convention) or None.
        frame: the target's :class:`~scripts.frame.VolumeFrame` (default :data:`~scripts.frame.FRAME`).
        device: where to render and resample (default: where the data is); results come back there.
        max_samples: the projector's chunk bound (memory).
        acquisition_ranges: per-view clinical acquisition ranges (a ``geometry`` entry of
            :data:`scripts.transforms.view_settings.VIEW_SETTINGS`): each sample's views are rendered with their own
            drawn SAD, SID, detector size and offset, and the item carries them (:data:`GEOMETRY_KEY`) for the
            sampler. None (default): every view at ``geometry`` and nothing more drawn (the ``fixed`` setting).
        appearance: processed-radiograph appearance ranges (a name or entry of
            :data:`scripts.transforms.appearance.APPEARANCE_RANGES`); None (default): only gain, gamma and noise.
        setting: the name of the :data:`~scripts.transforms.view_settings.VIEW_SETTINGS` entry it was built from
            (:meth:`from_setting`; recorded, not used).
    """

    @classmethod
    def from_setting(cls, setting: str | Mapping[str, Any] = "fixed", **kwargs: Any) -> RandRigidViewsd:
        """The transform of a named setting (:data:`scripts.transforms.view_settings.VIEW_SETTINGS`: ``fixed``,
        ``clinical``) or a setting mapping; ``kwargs``: the other constructor arguments (and any override)."""
        table = view_setting(setting)
        fields = {
            "max_shift_mm": table["max_shift_mm"],
            "max_rotation_deg": table["max_rotation_deg"],
            "gain_range": table["gain_range"],
            "gamma_range": table["gamma_range"],
            "noise_std": table["noise_std"],
            "acquisition_ranges": table["geometry"],
            "appearance": table["appearance"],
        }
        return cls(**{**fields, **kwargs, "setting": setting if isinstance(setting, str) else "custom"})

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        geometry: ProjectionGeometry | None = None,
        views: Sequence[str] = ("pa", "lateral"),
        ct_key: str | None = "ct_1mm",
        move_keys: Sequence[str] = (),
        prob: float = 1.0,
        max_shift_mm: float | Sequence[float] = 5.0,
        max_rotation_deg: float | Sequence[float] = 3.0,
        gain_range: Sequence[float] = (0.9, 1.1),
        gamma_range: Sequence[float] = (0.8, 1.25),
        noise_std: float = 0.01,
        render_shape: Sequence[int] | None = None,
        output_shape: Sequence[int] = VIEW_SHAPE,
        quantize_bits: int | None = 8,
        frame: VolumeFrame = FRAME,
        device: str | torch.device | None = None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        acquisition_ranges: Mapping[str, Any] | None = None,
        appearance: str | Mapping[str, Any] | None = None,
        setting: str | None = None,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"RandRigidViewsd needs keys (image_key, label_key), got {self.keys}")
        self.image_key, self.label_key = self.keys
        self.geometry = (geometry if geometry is not None else ProjectionGeometry.from_preset("perx2ct")).centred()
        if render_shape is not None:
            self.geometry = self.geometry.with_detector_shape(render_shape)
        self.views = tuple(views)
        for v in self.views:
            self.geometry.view(v)
        self.ct_key = ct_key
        self.move_keys = tuple(move_keys)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.max_shift_mm = _triple(max_shift_mm, "max_shift_mm")
        self.max_rotation_deg = _triple(max_rotation_deg, "max_rotation_deg")
        self.gain_range = _range(gain_range, "gain_range")
        self.gamma_range = _range(gamma_range, "gamma_range")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self.output_shape = tuple(int(s) for s in output_shape)
        self.quantize_bits = quantize_bits
        self.frame = frame
        self.device = device
        self.max_samples = int(max_samples)
        self._do = True
        self.motion = np.eye(4)
        self._gain = np.ones(len(self.views))
        self._gamma = np.ones(len(self.views))
        self._noise_seed = 0
        self.acquisition_ranges = None if acquisition_ranges is None else dict(acquisition_ranges)
        self.appearance = None if appearance is None else appearance_ranges(appearance)
        self.setting = setting
        self._acquisition: np.ndarray | None = None
        self._appearance: np.ndarray | None = None

    def settings(self) -> dict[str, Any]:
        """What the transform draws, as plain data (the recipe sidecar records it)."""
        return {
            "setting": self.setting,
            "max_shift_mm": self.max_shift_mm.tolist(),
            "max_rotation_deg": self.max_rotation_deg.tolist(),
            "gain_range": list(self.gain_range),
            "gamma_range": list(self.gamma_range),
            "noise_std": self.noise_std,
            "geometry": self.acquisition_ranges,
            "appearance": self.appearance,
            "render_shape": list(self.geometry.detector_shape),
        }

    def base_acquisition(self) -> np.ndarray:
        """``(V, 6)``: every view's acquisition at the transform's own geometry (the network's training one)."""
        return acquisition_array(self.geometry, self.views)

    def sample_geometry(self, acquisition: Any = None) -> ProjectionGeometry:
        """The geometry a sample's views are rendered with: ``geometry`` with the per-view ``acquisition`` (V, 6)
        (None: the transform's own geometry)."""
        if acquisition is None:
            return self.geometry
        return geometry_from_array(self.geometry, self.views, acquisition)

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        rot = self.R.uniform(-self.max_rotation_deg, self.max_rotation_deg)
        shift = self.R.uniform(-self.max_shift_mm, self.max_shift_mm)
        self.motion = rigid_motion(rot, shift)
        self._gain = self.R.uniform(*self.gain_range, size=len(self.views))
        self._gamma = np.exp(self.R.uniform(*np.log(self.gamma_range), size=len(self.views)))
        self._noise_seed = int(self.R.randint(0, 2**31 - 1))
        # drawn after the fixed setting's values, and only when set: the fixed stream and images stay as they were
        if self.acquisition_ranges is not None:
            self._acquisition = draw_acquisitions(self.R, self.acquisition_ranges, self.geometry, self.views)
        if self.appearance is not None:
            self._appearance = draw_appearance(self.R, self.appearance, len(self.views))

    def cube_to_render(self, data: Mapping[Hashable, Any]) -> tuple[torch.Tensor, float]:
        """``(HU cube (1, N, N, N) on the render device, voxel size mm)`` of an item: ``ct_key`` if present,
        else the target back in HU."""
        label = _plain(data[self.label_key])
        dev = torch.device(self.device) if self.device is not None else label.device
        ct = data.get(self.ct_key) if self.ct_key is not None else None
        if ct is not None:
            hu = _plain(ct).to(dev, torch.float32)
            affine = getattr(ct, "affine", None)
            spacing = (
                float(np.linalg.norm(np.asarray(affine)[:3, 0]))
                if affine is not None
                else self.frame.size_mm / hu.shape[-1]
            )
        else:
            hu = self.frame.target_to_hu(label.to(dev, torch.float32))
            spacing = self.frame.spacing_mm
        return hu, spacing

    def render(
        self,
        hu: torch.Tensor,
        spacing_mm: float,
        motion: np.ndarray,
        geometry: ProjectionGeometry | None = None,
        attenuation: bool = False,
    ) -> torch.Tensor:
        """Raw line integrals ``(V, rows, cols)`` of a centred HU cube ``(1, N, N, N)`` after ``motion``, through
        ``geometry`` (default the transform's); ``attenuation=True``: the cube is already attenuation per cm
        (:func:`scripts.projection.attenuation.hu_to_attenuation`, e.g. cached per case)."""
        if hu.ndim != 4 or hu.shape[0] != 1 or len(set(hu.shape[1:])) != 1:
            raise ValueError(f"expected a (1, N, N, N) cube to render, got {tuple(hu.shape)}")
        origin = [-(hu.shape[-1] - 1) / 2 * spacing_mm] * 3  # centred on the isocentre
        with torch.no_grad():
            mu = hu if attenuation else hu_to_attenuation(hu)
            raw = project(
                mu[None],
                [spacing_mm] * 3,
                origin,
                self.geometry if geometry is None else geometry,
                self.views,
                motion=motion,
                max_samples=self.max_samples,
            )
        return raw[0]

    def views_of(self, hu: torch.Tensor, spacing_mm: float, attenuation: bool = False) -> torch.Tensor:
        """The network's views ``(V, H, W)`` of a centred HU (or ``attenuation``) cube under the drawn motion,
        acquisition and appearance."""
        geometry = self.sample_geometry(self._acquisition)
        raw = self.render(hu, spacing_mm, self.motion, geometry, attenuation)
        return self.finish(raw, self._gain, self._gamma, self._noise_seed, self._appearance, geometry)

    def finish(
        self,
        raw: torch.Tensor,
        gain,
        gamma,
        noise_seed: int,
        appearance: Any = None,
        geometry: ProjectionGeometry | None = None,
    ) -> torch.Tensor:
        """Raw line integrals ``(V, rows, cols)`` -> views ``(V, H, W)``: with ``appearance`` rows (V, P) the
        detector physics first (:func:`scripts.transforms.appearance.detector_physics`, pixel pitch of
        ``geometry``'s views); the radiograph post-processing; unsharp masking (``appearance``); then
        ``clip(gain * x ** gamma + noise, 0, 1)`` per view (noise from ``noise_seed``), quantised; collimation
        borders (``appearance``) last."""
        gen = torch.Generator(device="cpu").manual_seed(int(noise_seed))
        geometry = self.geometry if geometry is None else geometry
        images = []
        for v in range(len(self.views)):
            params = None if appearance is None else [float(a) for a in appearance[v]]
            r = raw[v]
            if params is not None:
                r = detector_physics(r, params, geometry.view_pixel_spacing_mm(self.views[v]), gen)
            x = postprocess_radiograph(r, self.output_shape, True, self.quantize_bits)
            if params is not None:
                x = display_processing(x, params)
            noise = torch.randn(x.shape, generator=gen).to(x.device) * self.noise_std if self.noise_std > 0 else None
            x = vary_intensity(x, float(gain[v]), float(gamma[v]), noise, self.quantize_bits)
            images.append(x if params is None else collimate(x, params))
        return torch.stack(images)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            if self.acquisition_ranges is not None:  # every item has the key (batches collate): the views' geometry
                d[GEOMETRY_KEY] = torch.as_tensor(self.base_acquisition(), dtype=torch.float64)
            return d
        label = _plain(d[self.label_key])
        hu, spacing = self.cube_to_render(d)
        d[self.image_key] = self.views_of(hu, spacing).to(label.device)
        if self._acquisition is not None:
            d[GEOMETRY_KEY] = torch.as_tensor(self._acquisition, dtype=torch.float64)
        with torch.no_grad():
            moved = move_volume(label.to(hu.device), self.motion, self.frame.spacing_mm)
            d[self.label_key] = moved.to(label.device, label.dtype if label.is_floating_point() else torch.float32)
            for key in self.move_keys:
                if key in d and d[key] is not None:
                    vol = _plain(d[key])
                    spacing = self.frame.size_mm / vol.shape[-1]
                    d[key] = move_volume(vol.to(hu.device), self.motion, spacing, pad_value=-self.frame.hu_offset).to(
                        vol.device
                    )
        return d


class RandRigidViewsDataset(Dataset):
    """On-the-fly views for the slice-sample loader (:class:`scripts.data.slice_sampling.SliceDataset`).

    Wraps the dataset: for each sample ``(case, axis, index, box)`` it draws a motion and intensity variation
    with ``views`` (a :class:`RandRigidViewsd`; its random stream, seeded with ``seed``, is reseeded per loader
    worker by MONAI's ``DataLoader`` as for any random transform), renders both views of the moved case, and samples
    the ground-truth slice at the moved positions (``label(y) = cube(motion^-1 y)`` through the dataset's own
    ``target``, so the 1 mm point-sampled ground truth keeps its meaning).

    Args:
        dataset: the :class:`~scripts.data.slice_sampling.SliceDataset` to wrap.
        views: the :class:`RandRigidViewsd` that draws and renders (its keys are unused here).
        render_grid: voxels per side of the cube the views are rendered from (default 128: the case's cached
            128^3 target, or its cube area-averaged once to 128^3; about 0.3 s per sample on 2 CPU cores at
            128^2; ``None``: the cached ground-truth cube as it is, e.g. 1 mm, 2.5x the samples per ray).
        seed: seed of the random stream.
        render_in_batch: only draw here and leave the rendering to :class:`RandRigidViewsBatch` (the trainer's
            ``prepare_batch``), which renders the whole batch in one projector call on the training device (GPU).

    Items: as the wrapped dataset's (``image`` replaced, ``label`` resampled at the moved positions), plus, when the
    views draw acquisitions (``clinical``), :data:`GEOMETRY_KEY` ``(V, 6)`` float64: the geometry the views were
    rendered with (the training geometry's for samples the draw skipped). The case's cube is converted to attenuation
    once per worker (:meth:`attenuation`), not per sample.
    """

    def __init__(
        self,
        dataset,
        views: RandRigidViewsd,
        render_grid: int | None = FRAME.shape,
        seed: int = 0,
        render_in_batch: bool = False,
    ) -> None:
        self.dataset = dataset
        self.views = views
        self.render_grid = None if render_grid is None else int(render_grid)
        self.render_in_batch = bool(render_in_batch)
        self.views.set_random_state(seed=int(seed))
        self._cubes = RecentCache(RENDER_CASES)  # case -> [HU cube, voxel size (mm), attenuation or None]

    def attenuation(self, c: int) -> tuple[torch.Tensor, float]:
        """:meth:`_cube` of case ``c`` converted once to attenuation per cm (kept per worker while the case stays
        among the :data:`RENDER_CASES` most recently used), and its voxel size."""
        hu, spacing = self._cube(c)
        entry = self._cubes[c]
        if entry[2] is None:
            entry[2] = hu_to_attenuation(hu)
        return entry[2], spacing

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def volume_shape(self) -> int:
        """The wrapped dataset's target grid (read by its sampler)."""
        return self.dataset.volume_shape

    @property
    def frame(self):
        return self.dataset.frame

    def _cube(self, c: int) -> tuple[torch.Tensor, float]:
        """The HU cube of case ``c`` to render from and its voxel size (kept per worker): the cached 128^3
        target when rendering from the target grid, else the case's ground-truth cube (1 mm HU or target)."""
        hu, spacing, _ = self._cubes.get_or_make(c, lambda: [*self._load_cube(c), None])
        return hu, spacing

    def _load_cube(self, c: int) -> tuple[torch.Tensor, float]:
        case = self.dataset.cases[c]
        folder = Path(case["dir"])
        frame = self.views.frame
        names = [case.get("volume"), "ct_1mm.npy" if case["kind"] == "1mm" else "target.npy", "volume.npy"]
        use_target = self.render_grid == frame.shape and (folder / "target.npy").is_file()
        name = "target.npy" if use_target else next(n for n in names if n and (folder / n).is_file())
        vol = torch.from_numpy(np.load(folder / name).astype(np.float32))[None]
        if name == "target.npy" or case["kind"] != "1mm":
            vol = frame.target_to_hu(vol)
        size_mm = float(case.get("size_mm", frame.size_mm))
        if self.render_grid is not None and vol.shape[-1] > self.render_grid:
            vol = area_downsample(vol, (self.render_grid,) * 3).as_tensor()
        return vol, size_mm / vol.shape[-1]

    def __getitem__(self, key: Any) -> dict[str, Any]:
        item = dict(self.dataset[key])
        k = int(key[0]) if isinstance(key, (tuple, list)) else int(key)
        c, _, _ = self.dataset.locate(k)
        self.views.randomize()
        t = self.views
        if t.acquisition_ranges is not None:  # the views' per-view geometry, for the sampler (every item: collation)
            acquisition = t._acquisition if t._do else t.base_acquisition()
            item[GEOMETRY_KEY] = torch.as_tensor(acquisition, dtype=torch.float64)
        if self.render_in_batch:  # drawn here, rendered on the training device by RandRigidViewsBatch
            item["onthefly_apply"] = torch.tensor(bool(self.views._do))  # every item has the keys: batches collate
            item["onthefly_case"] = torch.tensor(c, dtype=torch.long)
            item["onthefly_motion"] = torch.as_tensor(self.views.motion, dtype=torch.float64)
            item["onthefly_gain"] = torch.as_tensor(self.views._gain, dtype=torch.float64)
            item["onthefly_gamma"] = torch.as_tensor(self.views._gamma, dtype=torch.float64)
            item["onthefly_noise_seed"] = torch.tensor(self.views._noise_seed, dtype=torch.long)
            if t._appearance is not None:
                item["onthefly_appearance"] = torch.as_tensor(t._appearance, dtype=torch.float64)
            if not self.views._do:
                return item
        elif not self.views._do:
            return item
        else:
            mu, spacing = self.attenuation(c)
            item["image"] = self.views.views_of(mu, spacing, attenuation=True).cpu()
        frame = self.dataset.frame
        positions = slice_positions(
            item["slice_axis"],
            item["slice_index"],
            item["zoom_box"],
            self.dataset.output_size,
            self.dataset.volume_shape,
        )  # (h, w, 3) voxels of the target grid
        inv = torch.as_tensor(np.linalg.inv(self.views.motion), dtype=torch.float64)
        mm = frame.voxel_to_mm(positions.double())
        moved = frame.mm_to_voxel(mm @ inv[:3, :3].T + inv[:3, 3])
        item["label"] = self.dataset.target(c, moved)[None].to(torch.float32)
        return item


class RandRigidViewsBatch:
    """``prepare_batch`` that renders a batch's on-the-fly views on the training device, then hands the batch on.

    With :class:`RandRigidViewsDataset` ``(render_in_batch=True)`` the loader workers only draw each sample's
    motion and intensity variation (and sample its moved ground truth); this renders all samples' views in one
    batched projector call on ``device`` (each case's 128^3 cube is kept there after its first use) and applies
    the same post-processing and variation as the per-sample path, then calls ``prepare_batch`` (the usual
    :class:`scripts.data.slice_sampling.SliceBatch`). Items without the draw (``enabled`` False, or ``prob`` < 1 misses) pass.

    Per-sample geometry: when the batch carries each sample's acquisition (:data:`GEOMETRY_KEY`, the ``clinical``
    setting; rendered here or in the loader workers), the samples are rendered with it (one batched projector
    call over all their geometries) and the training step gets the same geometry objects as the keyword
    ``geometry`` (:meth:`geometries`), whether or not this renders (``enabled``): the training inferer
    (:class:`scripts.training.losses.ConsistencySliceInferer`) hands them to the network's sampler as its camera,
    as inference does with a radiograph's own geometry.

    Args:
        prepare_batch: the wrapped ``prepare_batch``.
        dataset: the :class:`RandRigidViewsDataset` the batches come from (its cubes and its views transform).
        enabled: False makes this a plain pass-through (e.g. ``torch.cuda.is_available()`` in a config).
    """

    keys = (
        "onthefly_apply",
        "onthefly_case",
        "onthefly_motion",
        "onthefly_gain",
        "onthefly_gamma",
        "onthefly_noise_seed",
    )

    def __init__(self, prepare_batch, dataset: RandRigidViewsDataset, enabled: bool = True) -> None:
        self.prepare_batch = prepare_batch
        self.dataset = dataset
        self.enabled = bool(enabled)
        self._cubes = RecentCache(RENDER_CASES)

    def _cube(self, c: int, device: torch.device) -> tuple[torch.Tensor, float]:
        """Case ``c``'s cube as attenuation per cm on ``device`` (converted once, kept while among the
        :data:`RENDER_CASES` most recently used), and its voxel size."""

        def make() -> tuple[torch.Tensor, float]:
            mu, spacing = self.dataset.attenuation(c)
            return mu.to(device), spacing

        return self._cubes.get_or_make((c, str(device)), make)

    def render(self, batchdata: dict, device: str | torch.device | None = None) -> torch.Tensor:
        """Views ``(N, V, H, W)`` of the batch: the drawn samples rendered on ``device``, the others as they came."""
        t = self.dataset.views
        dev = torch.device(device) if device is not None else torch.device("cpu")
        image = torch.as_tensor(batchdata["image"]).to(dev, torch.float32).clone()
        chosen = [i for i, a in enumerate(batchdata["onthefly_apply"]) if bool(a)]
        if not chosen:
            return image
        cubes = [self._cube(int(batchdata["onthefly_case"][i]), dev) for i in chosen]
        spacing = cubes[0][1]
        if any(abs(sp - spacing) > 1e-9 or cube.shape != cubes[0][0].shape for cube, sp in cubes):
            raise ValueError("on-the-fly views in a batch need cubes of one shape and spacing (render_grid)")
        hu = torch.stack([cube for cube, _ in cubes])  # (n, 1, N, N, N)
        n = hu.shape[-1]
        origin = [-(n - 1) / 2 * spacing] * 3
        motion = torch.as_tensor(batchdata["onthefly_motion"], dtype=torch.float64)[chosen]
        acquisition = batchdata.get(GEOMETRY_KEY)
        geometries = [t.sample_geometry(None if acquisition is None else acquisition[i]) for i in chosen]
        appearance = batchdata.get("onthefly_appearance")
        with torch.no_grad():
            raw = project(hu, [spacing] * 3, origin, geometries, t.views, motion=motion, max_samples=t.max_samples)
            for j, i in enumerate(chosen):
                gain, gamma = batchdata["onthefly_gain"][i], batchdata["onthefly_gamma"][i]
                look = None if appearance is None else appearance[i]
                seed = int(batchdata["onthefly_noise_seed"][i])
                image[i] = t.finish(raw[j], gain, gamma, seed, look, geometries[j]).to(dev)
        return image

    def __call__(self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs):
        if self.enabled and all(k in batchdata for k in self.keys):
            batchdata = dict(batchdata)
            batchdata["image"] = self.render(batchdata, device)
        prepared = self.prepare_batch(batchdata, device, non_blocking, **kwargs)
        if GEOMETRY_KEY not in batchdata:
            return prepared
        image, label, args, kw = prepared
        return image, label, args, {**kw, "geometry": self.geometries(batchdata[GEOMETRY_KEY])}

    def geometries(self, acquisitions) -> list[ProjectionGeometry]:
        """Each sample's :class:`~scripts.projection.geometry.ProjectionGeometry` from its acquisition ``(N, V, 6)``:
        the objects its views were rendered with (:meth:`RandRigidViewsd.sample_geometry`)."""
        t = self.dataset.views
        return [t.sample_geometry(a) for a in torch.as_tensor(acquisitions, dtype=torch.float64).cpu()]
