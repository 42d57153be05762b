"""The re-projection consistency loss (issue 19, item 4): off by default (the loss is unchanged), gives gradients
when on, and scores a correct volume better than a wrong one or a wrong geometry."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from scripts.frame import FRAME
from scripts.inference.inferers import SliceInferer
from scripts.networks import PerspectiveSampler, build_perx2ct
from scripts.projection.geometry import ProjectionGeometry
from scripts.training.losses import ConsistencySliceInferer, PerX2CTLoss, ReprojectionConsistency
from scripts.transforms.rigid_views import RandRigidViewsd

BASE = ProjectionGeometry.from_preset("perx2ct")
REPO = Path(__file__).resolve().parents[1]


def _phantom_target(n: int) -> torch.Tensor:
    """(n, n, n) target-scale chest phantom without left-right or head-feet symmetry: body, two unequal lungs, a
    spine, a dense nodule in the left lung."""
    mm = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * FRAME.size_mm / n
    x, y, z = torch.meshgrid(mm, mm, mm, indexing="ij")
    hu = torch.full((n, n, n), -1000.0)
    hu[((x / 130) ** 2 + (y / 90) ** 2 < 1) & (z.abs() < 140)] = 40.0
    hu[((x - 60) / 45) ** 2 + ((y + 5) / 55) ** 2 + ((z - 10) / 110) ** 2 < 1] = -850.0
    hu[((x + 65) / 40) ** 2 + ((y + 5) / 50) ** 2 + ((z + 20) / 80) ** 2 < 1] = -850.0
    hu[((x / 14) ** 2 + ((y - 65) / 14) ** 2 < 1) & (z.abs() < 140)] = 700.0
    hu[(x - 60) ** 2 + (y + 20) ** 2 + (z - 60) ** 2 < 20**2] = 400.0
    return FRAME.hu_to_target(hu)


def _stacks(c: ReprojectionConsistency, vol: torch.Tensor) -> dict[str, torch.Tensor]:
    """The planes across each view's beam at the slab centres, taken from a volume (X, Y, Z) (nearest plane)."""
    pos = c.plane_positions(vol.shape[0]).round().long()
    return {"pa": vol[:, pos, :][None, None], "lateral": vol[pos][None, None]}


def _setup():
    """A clinical view pair of the phantom (its own geometry and appearance), the phantom and that geometry."""
    t = RandRigidViewsd.from_setting("clinical", render_shape=(64, 64), output_shape=(64, 64))
    t.set_random_state(seed=0)
    t.randomize()
    while t._acquisition is None or (t._acquisition == t.base_acquisition()).all():
        t.randomize()
    t._do = True
    target = _phantom_target(64)
    views = t.views_of(FRAME.target_to_hu(target)[None], FRAME.size_mm / 64)
    return views[None], target, t.sample_geometry(t._acquisition)


def test_zero_weight_leaves_the_loss_and_the_step_unchanged():
    """Weight 0 (train.json's default): the loss equals the loss without the option and the training inferer
    computes nothing more than the slice inferer."""
    assert json.loads((REPO / "configs" / "train.json").read_text())["consistency_weight"] == 0.0
    off = ReprojectionConsistency(weight=0.0, geometry=BASE)
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(4, 1, 32, 32, generator=g), torch.rand(4, 1, 32, 32, generator=g)
    plain = PerX2CTLoss(lpips_vgg_weights=None)
    with_off = PerX2CTLoss(lpips_vgg_weights=None, consistency=off)
    assert torch.equal(plain(pred, target), with_off(pred, target))
    assert with_off.is_paper_loss == plain.is_paper_loss and with_off.recipe["formula"] == plain.recipe["formula"]
    torch.manual_seed(0)
    net = build_perx2ct("small", PerspectiveSampler(BASE), query_grid=8, volume_shape=32, volume_size_mm=320.0)
    image = torch.rand(2, 2, 64, 64, generator=g)
    kw = {"slice_axis": torch.zeros(2, 1, dtype=torch.long), "slice_index": torch.full((2, 1), 5.0)}
    a = SliceInferer()(image, net, **kw)
    b = ConsistencySliceInferer(off)(image, net, **kw)
    assert torch.equal(a, b) and off.pending is None


def test_nonzero_weight_adds_a_term_with_gradients():
    """Weight > 0: the training step's inferer computes the term for the batch's first case, it gives the network
    gradients, and the loss adds it (weighted) once."""
    views, _, geometry = _setup()
    torch.manual_seed(0)
    net = build_perx2ct("small", PerspectiveSampler(BASE), query_grid=8, volume_shape=32, volume_size_mm=320.0)
    on = ReprojectionConsistency(weight=0.5, geometry=BASE, slices=3, detector_shape=(24, 24))
    loss = PerX2CTLoss(lpips_vgg_weights=None, consistency=on)
    image = torch.nn.functional.interpolate(torch.cat([views, views]), size=(32, 32), mode="area")
    kw = {"slice_axis": torch.zeros(2, 1, dtype=torch.long), "slice_index": torch.full((2, 1), 5.0)}
    pred = ConsistencySliceInferer(on)(image, net, geometry=[geometry, geometry], **kw)
    term = on.pending
    assert term is not None and term.requires_grad and 0 < float(term.detach()) <= 0.5 * 2 + 1e-6
    term.backward(retain_graph=True)
    grads = [p.grad.abs().sum() for p in net.decoder.parameters() if p.grad is not None]
    assert grads and float(sum(grads)) > 0
    total = loss(pred, torch.rand_like(pred))
    assert float(loss.last_components["consistency"]) == float(term.detach()) and on.pending is None  # added once
    parts = loss.last_components
    torch.testing.assert_close(total.detach(), parts["l1"] + parts["ssim"] + parts["consistency"])


def test_a_correct_volume_scores_better_than_wrong_ones():
    """The phantom's own planes, projected through the views' own geometry, agree with its clinical views better
    than the mirrored or shifted phantom, or the right phantom through the training geometry."""
    views, target, geometry = _setup()
    c = ReprojectionConsistency(weight=1.0, geometry=BASE, slices=8)
    right = float(c.term(_stacks(c, target), views, [geometry]))
    mirrored = float(c.term(_stacks(c, target.flip(0)), views, [geometry]))
    shifted = float(c.term(_stacks(c, torch.roll(target, 8, 2)), views, [geometry]))
    wrong_geometry = float(c.term(_stacks(c, target), views, [BASE]))
    assert right < 0.75 * min(mirrored, shifted, wrong_geometry), (right, mirrored, shifted, wrong_geometry)
