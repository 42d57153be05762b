"""PerX2CT network: sizes of the presets, shapes for every axis and zoom, gradients, determinism."""

import math

import pytest
import torch
from scripts.networks import MODEL_PRESETS, PerspectiveSampler, PerX2CT, build_perx2ct
from scripts.projection.geometry import ProjectionGeometry
from scripts.slicing import axis_code
from torch.utils.flop_counter import FlopCounterMode


def one_slice_per_case(net, features, axis: str, index: torch.Tensor, zoom_box: torch.Tensor | None = None):
    """One slice per case along the named ``axis`` from ``net.encode``'s output: (B, 1, h, w)."""
    b = index.shape[0]
    ax = torch.full((b, 1), axis_code(axis), dtype=torch.long)
    box = None if zoom_box is None else zoom_box.reshape(b, 1, 3)
    return net.render(*features, ax, index.reshape(b, 1), box)


def sampler():
    return PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))


def tiny(**kw) -> PerX2CT:
    """A small network on a 32^3 volume (8 x 8 query grid): cheap enough to reconstruct whole volumes."""
    return build_perx2ct("small", sampler(), query_grid=8, volume_shape=32, volume_size_mm=320.0, **kw)


def torchvision_bottleneck_resnet(layers, widths, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's ``ResNet(Bottleneck, layers)`` layout, written out: the stem (7x7
    ``conv1``, ``bn1``), ``layer<i>.<j>`` blocks (1x1 ``conv1``, 3x3 ``conv2``, 1x1 ``conv3`` to 4 x width, each
    with its batch norm; the first block of a layer with a ``downsample`` 1x1 conv and norm), then ``fc``; no
    biases but the batch norms' and fc's."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv_bn(conv: str, norm: str, c_out: int, c_in: int, k: int) -> None:
        sd[f"{conv}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * 0.1
        sd[f"{norm}.weight"] = torch.rand(c_out, generator=g) + 0.5
        sd[f"{norm}.bias"] = torch.randn(c_out, generator=g)
        sd[f"{norm}.running_mean"] = torch.randn(c_out, generator=g) * 0.1
        sd[f"{norm}.running_var"] = torch.rand(c_out, generator=g) + 0.5
        sd[f"{norm}.num_batches_tracked"] = torch.tensor(0)

    conv_bn("conv1", "bn1", widths[0], 3, 7)
    c_in = widths[0]
    for i, (blocks, width) in enumerate(zip(layers, widths), start=1):
        for j in range(blocks):
            p = f"layer{i}.{j}"
            conv_bn(f"{p}.conv1", f"{p}.bn1", width, c_in, 1)
            conv_bn(f"{p}.conv2", f"{p}.bn2", width, width, 3)
            conv_bn(f"{p}.conv3", f"{p}.bn3", 4 * width, width, 1)
            if j == 0:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", 4 * width, c_in, 1)
            c_in = 4 * width
    sd["fc.weight"], sd["fc.bias"] = torch.randn(num_classes, c_in, generator=g), torch.randn(num_classes, generator=g)
    return sd


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset, expected, tol", [("paper", 42.6e6, 0.02), ("paper_global", 70e6, 0.03)])
def test_paper_parameter_counts(preset, expected, tol):
    with torch.device("meta"):
        net = build_perx2ct(preset, sampler())
    assert abs(n_params(net) - expected) / expected <= tol, n_params(net)


def _volume_flops(preset):
    with torch.device("meta"):
        net = build_perx2ct(preset, sampler()).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 2, 128, 128))
    return counter.get_total_flops()


def test_small_preset_is_cpu_sized():
    with torch.device("meta"):
        small = build_perx2ct("small", sampler())
    assert n_params(small) <= 5e6
    paper, cheap = _volume_flops("paper"), _volume_flops("small")
    assert 20e12 < paper < 26e12  # about 23.6 TFLOP per volume (the paper preset, counted by layer)
    assert cheap <= paper / 20, (cheap / 1e9, paper / 1e9)


def test_point_features_have_the_paper_widths():
    with torch.device("meta"):
        assert build_perx2ct("paper", sampler()).point_channels == 63 + 2 * 512 == 1087
        assert build_perx2ct("paper_global", sampler()).point_channels == 1087 + 2 * 256 == 1599
    assert MODEL_PRESETS["paper_global"]["zoom_in"] and not MODEL_PRESETS["paper"]["zoom_in"]


def test_slice_shapes_for_every_axis_and_zoom():
    net = build_perx2ct("small", sampler()).eval()
    image = torch.rand(2, 2, 128, 128)
    axis = torch.tensor([[0, 1, 2], [2, 1, 0]])
    index = torch.tensor([[0.0, 64.0, 127.0], [10.0, 20.0, 30.0]])
    box = torch.tensor([[[0, 0, 128.0], [10, 20, 32], [96, 96, 32]], [[0, 0, 64.0], [64, 0, 64], [0, 0, 128]]])
    with torch.no_grad():
        assert net(image, axis, index).shape == (2, 3, 128, 128)
        assert net(image, axis, index, box).shape == (2, 3, 128, 128)


def test_full_volume_shape_and_axis_consistency():
    net = tiny().eval()
    image = torch.rand(1, 2, 128, 128)
    with torch.no_grad():
        vol = net(image)
        assert vol.shape == (1, 1, 32, 32, 32)
        three = net.reconstruct(image, [0, 1, 2])
        assert three.shape == (1, 3, 32, 32, 32)
        torch.testing.assert_close(three[:, :1], vol)
        k = torch.tensor([[5.0]])
        for code, cut in ((0, lambda v: v[0, :, :, 5]), (1, lambda v: v[0, :, 5, :]), (2, lambda v: v[0, 5, :, :])):
            s = net(image, torch.tensor([[code]]), k)[0, 0]
            torch.testing.assert_close(cut(three[:, code]), s, rtol=1e-4, atol=1e-5)


def test_each_view_is_encoded_in_its_own_call():
    """One encoder call per view for all cases of a batch, on every path (volume, slices, zoom); in training,
    BatchNorm statistics come from one view's images only (as the official code), so the PA features do not
    depend on the lateral images."""
    net = tiny().eval()
    calls = []
    net.encoder.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    image = torch.rand(2, 2, 128, 128)
    with torch.no_grad():
        net.reconstruct(image, [0, 1, 2])
        assert calls == [(2, 1, 128, 128)] * 2
        net(image, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))
        net(image, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1), torch.tensor([[[0.0, 0.0, 64.0]]] * 2))
        assert calls == [(2, 1, 128, 128)] * 6
    net.train()
    other = image.clone()
    other[:, 1] = torch.rand(2, 128, 128) * 0.5
    pa_maps = net.encode(image)[0][0]
    torch.testing.assert_close(net.encode(other)[0][0], pa_maps, rtol=0, atol=0)
    both = net.encoder(image.transpose(0, 1).reshape(4, 1, 128, 128))[0][:2]  # the two views batched together
    assert (both - pa_maps).abs().max() > 1e-3  # ... would mix the views' statistics


def test_stem_trains_with_imagenet_weights_and_bn1_keeps_batch_statistics(tmp_path, caplog):
    """As the official run: conv1/bn1 train also when ImageNet weights are loaded (Lightning's toggle_optimizer undid
    the official freeze); bn1 normalises with (and updates) batch statistics in training. Without weights, training
    start warns."""
    from scripts.networks import random_encoder_warning

    torch.manual_seed(0)
    scratch = tiny().train()
    assert scratch.encoder.weights_source == "random" and not scratch.encoder.freeze_stem
    out = scratch(torch.rand(2, 2, 128, 128), torch.tensor([[0, 2], [1, 0]]), torch.tensor([[3.0, 9.0], [16.0, 31.0]]))
    out.mean().backward()
    assert scratch.encoder.conv1.weight.grad.abs().sum() > 0 and scratch.encoder.bn1.weight.grad.abs().sum() > 0
    assert random_encoder_warning(scratch) is None  # a basic-block encoder: no ImageNet weights exist for it
    resnet = {"block": "bottleneck", "layers": (3, 4), "widths": (64, 128)}  # ResNet-101 up to layer2
    msg = random_encoder_warning(tiny(encoder=resnet))
    assert msg is not None and msg.startswith("encoder starts from random weights: not the paper's recipe")
    assert "python -m scripts download_weights --name resnet101" in msg
    caplog.clear()
    with caplog.at_level("WARNING"):  # training start says so, once
        fresh = tiny(encoder=resnet)
        fresh.train()
        fresh.train()
    assert caplog.text.count("encoder starts from random weights") == 1
    caplog.clear()
    with caplog.at_level("WARNING"):  # weights loaded from a checkpoint (--init_ckpt, resume) are not random
        loaded = tiny(encoder=resnet)
        loaded.load_state_dict(fresh.state_dict())
        loaded.train()
    assert loaded.encoder.weights_source == "checkpoint" and "random weights" not in caplog.text

    file = tmp_path / "resnet_imagenet.pth"
    torch.save(dict(scratch.encoder.state_dict()), file)
    net = tiny(encoder_weights=str(file)).train()
    assert net.encoder.weights_source == f"imagenet:{file}" and random_encoder_warning(net) is None
    before = net.encoder.bn1.running_mean.clone()
    out = net(torch.rand(2, 2, 128, 128), torch.tensor([[0, 2], [1, 0]]), torch.tensor([[3.0, 9.0], [16.0, 31.0]]))
    out.mean().backward()
    assert net.encoder.layer1[0].conv1.weight.grad.abs().sum() > 0
    for p in (net.encoder.conv1.weight, net.encoder.bn1.weight, net.encoder.bn1.bias):  # the stem trains, as the
        assert p.requires_grad and p.grad.abs().sum() > 0  # official run (tests/test_encoder_stem.py)
    assert net.encoder.bn1.training and not torch.equal(net.encoder.bn1.running_mean, before)  # batch statistics
    assert tiny(encoder_weights=str(file), encoder={"freeze_stem": True}).encoder.freeze_stem


def test_same_seed_same_output():
    image = torch.rand(1, 2, 128, 128)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = tiny().eval()
        with torch.no_grad():
            outs.append(net(image, torch.tensor([[1]]), torch.tensor([[7.0]])))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_encoder_weights_from_a_local_torchvision_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder weights not found: .*nothing.pth"):
        tiny(encoder_weights=str(tmp_path / "nothing.pth"))
    torch.manual_seed(0)
    donor = tiny().encoder.state_dict()
    file = tmp_path / "resnet_imagenet.pth"
    extra = {
        "fc.weight": torch.zeros(1000, 512),
        "layer4.0.conv1.weight": torch.zeros(1),
    }  # torchvision keys not built here
    torch.save({**{k: v for k, v in donor.items() if k not in ("mean", "std")}, **extra}, file)
    torch.manual_seed(1)
    net = tiny(encoder_weights=str(file))
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, donor[k])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit this encoder"):
        tiny(encoder_weights=str(tmp_path / "wrong.pth"))


def test_mismatched_grid_and_volume_is_refused():
    with pytest.raises(ValueError, match="must match"):
        build_perx2ct("small", sampler(), query_grid=8)
    with pytest.raises(ValueError, match="unknown model_preset 'huge'"):
        build_perx2ct("huge", sampler())


@pytest.mark.parametrize(
    "axis, cut",
    [
        ("axial", lambda v, n: v[:, :, :, :, n]),
        ("coronal", lambda v, n: v[:, :, :, n, :]),
        ("sagittal", lambda v, n: v[:, :, n, :, :]),
    ],
)
def test_named_axis_slices_are_the_volume_slices(axis, cut):
    """Slices along a named axis (``render`` with one slice per case, and ``forward`` with axis codes) cut the
    volume as documented."""
    torch.manual_seed(0)
    net = tiny().eval()
    image = torch.rand(2, 2, 128, 128)
    with torch.no_grad():
        features = net.encode(image)
        vols = net.reconstruct(image, [("axial", "coronal", "sagittal").index(axis)])
        index = torch.tensor([3.0, 30.0])
        s = one_slice_per_case(net, features, axis, index)
        assert s.shape == (2, 1, 32, 32)
        torch.testing.assert_close(s[0], cut(vols, 3)[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s[1], cut(vols, 30)[1], rtol=1e-4, atol=1e-5)
        code = torch.full((2, 1), axis_code(axis), dtype=torch.long)
        torch.testing.assert_close(net(image, code, index[:, None]), s, rtol=1e-4, atol=1e-5)


def test_full_and_zoomed_slices_have_the_decoder_resolution():
    net = build_perx2ct("small", sampler()).eval()
    image = torch.rand(2, 2, 128, 128)
    with torch.no_grad():
        features = net.encode(image)
        for axis in ("axial", "coronal", "sagittal"):
            full = one_slice_per_case(net, features, axis, torch.tensor([0.0, 127.0]))
            zoom = one_slice_per_case(
                net, features, axis, torch.tensor([64.0, 63.5]), torch.tensor([[0.0, 0.0, 128.0], [40.0, 8.0, 32.0]])
            )
            assert full.shape == zoom.shape == (2, 1, 128, 128)
        # a zoom box of the whole slice is the whole slice
        index = torch.tensor([5.0, 6.0])
        whole = one_slice_per_case(net, features, "coronal", index, torch.tensor([[0.0, 0.0, 128.0]] * 2))
        torch.testing.assert_close(whole, one_slice_per_case(net, features, "coronal", index))


def test_zoomed_slice_is_a_finer_rendering_of_the_same_region():
    """A zoom box moves the query grid: its 32 x 32 points lie on the sub-square, 4x denser."""
    net = tiny().eval()
    seen = []
    net.sampler.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    with torch.no_grad():
        net(
            torch.rand(1, 2, 128, 128),
            torch.zeros(1, 1, dtype=torch.long),
            torch.tensor([[10.0]]),
            torch.tensor([[[4.0, 8.0, 8.0]]]),
        )
    points = seen[0].reshape(8, 8, 3)  # mm; volume 32 voxels of 10 mm, centre at voxel 15.5
    vox = points / 10.0 + 15.5
    torch.testing.assert_close(vox[:, 0, 0], torch.arange(8) + 4.0)  # rows: voxels 4..11 (box 4..12, 1 voxel apart)
    torch.testing.assert_close(vox[0, :, 1], torch.arange(8) + 8.0)
    torch.testing.assert_close(vox[..., 2], torch.full((8, 8), 10.0))


def test_full_volume_of_the_small_preset():
    net = build_perx2ct("small", sampler(), slice_batch=32).eval()
    with torch.no_grad():
        vol = net(torch.rand(2, 2, 128, 128))
    assert vol.shape == (2, 1, 128, 128, 128) and torch.isfinite(vol).all()


def test_global_branch_is_256_per_view_and_loads_a_full_resnet_state_dict(tmp_path):
    """The global branch stops at layer3's last block's 1x1 conv (256 channels for ResNet-101); a complete
    torchvision-layout ResNet state dict (layer3 whole, layer4, fc) loads into it."""
    with torch.device("meta"):
        paper_global = build_perx2ct("paper_global", sampler())
    assert paper_global.global_dim == 256 and paper_global.point_channels == 1599
    last = paper_global.encoder.layer3[-1]
    assert [n for n, _ in last.named_children()] == ["conv1", "bn1", "act"] and last.conv1.out_channels == 256

    enc = {"block": "bottleneck", "layers": (1, 1, 2), "widths": (8, 16, 32), "global_features": True}
    donor = torchvision_bottleneck_resnet(layers=(1, 1, 2, 1), widths=(8, 16, 32, 64), num_classes=1000)
    assert {"fc.weight", "layer4.0.conv3.weight", "layer3.1.conv3.weight"} <= set(donor)
    file = tmp_path / "resnet.pth"
    torch.save(donor, file)
    net = tiny(encoder=enc, encoder_weights=str(file)).eval()
    own = net.encoder.state_dict()
    assert "layer3.1.conv1.weight" in own and "layer3.1.conv2.weight" not in own
    for k, v in own.items():
        torch.testing.assert_close(v, donor[k])
    with torch.no_grad():
        out = net(torch.rand(2, 2, 128, 128), torch.full((2, 1), 2, dtype=torch.long), torch.tensor([[1.0], [2.0]]))
    assert out.shape == (2, 1, 32, 32) and net.point_channels == 63 + 2 * (64 + 32)


def test_sampler_repr_and_the_network_uses_the_centred_geometry():
    g = ProjectionGeometry.from_preset("perx2ct", isocentre_mm=(10.0, -20.0, 300.0))
    s = PerspectiveSampler(g)
    assert s.geometry.isocentre_mm == (0.0, 0.0, 0.0)
    assert "sad_mm=700" in repr(s) and "views=('pa', 'lateral')" in repr(s)


def test_positional_encoding_is_the_official_nerf_embedder():
    """[p, sin(2^0 p), cos(2^0 p), ..., sin(2^9 p), cos(2^9 p)] (3 values per term, no pi), p = axes @ offset / unit."""
    from scripts.networks import PositionalEncoding

    p = torch.rand(7, 3) - 0.5
    pe = PositionalEncoding()
    expected = torch.cat([p] + [f(p * 2.0**k) for k in range(10) for f in (torch.sin, torch.cos)], dim=-1)
    torch.testing.assert_close(pe(p), expected, rtol=0, atol=0)
    assert pe.out_channels == 63
    official = PositionalEncoding(axes=[[0, 0, -1], [0, 1, 0], [1, 0, 0]])  # official world p = (-z, y, x) / 320 mm
    torch.testing.assert_close(official(p), pe(torch.stack((-p[:, 2], p[:, 1], p[:, 0]), -1)), rtol=0, atol=1e-7)
    earlier = PositionalEncoding(unit=0.5, pi=True)  # the earlier encoding: sin(2^k pi x) of x = mm / 160
    torch.testing.assert_close(earlier(p)[:, 3:6], torch.sin(2 * p * math.pi), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="3 x 3 matrix"):
        PositionalEncoding(axes=[[1, 0, 0]])


def _official_conventions():
    """The convention fields of ``paper_official`` (applied to the small preset in these tests)."""
    size = ("encoder", "decoder_channels", "num_res_blocks", "attn_resolutions")
    return {k: v for k, v in MODEL_PRESETS["paper_official"].items() if k not in size}


def _decoder_io(net, axis, index, box=None):
    """(decoder input (n, F, 32, 32), decoder output, network output) of one slice of a random image."""
    seen = {}
    h = net.decoder.register_forward_hook(lambda m, args, out: seen.update(x=args[0].clone(), y=out.clone()))
    with torch.no_grad():
        out = one_slice_per_case(net, net.encode(torch.rand(1, 2, 128, 128)), axis, torch.tensor([float(index)]), box)
    h.remove()
    return seen["x"], seen["y"], out


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_query_points_reach_the_decoder_as_the_official_code_lays_them_out(axis):
    """Paper defaults: the PE sees mm / 320 on this bundle's axes and layout. Official mode: the decoder input is laid
    out as the official code's grid (oracle README: official slice k of an axis fixes official axis
    (0, 1, 2)[axis] at k, rows and cols are the other two in order; grid voxel = 1.5 + 4t; p = (v - 63.5) / 128),
    and the output is laid back into this bundle's layout."""
    code = ("axial", "coronal", "sagittal").index(axis)
    net = build_perx2ct("small", sampler()).eval()
    pe0 = 2 * 64  # PE channels follow the two views' 64 local channels
    x, _, _ = _decoder_io(net, axis, 40)
    grid = (torch.arange(32) * 4 + 1.5 - 63.5) / 128
    fixed, rows, cols = {0: (2, 0, 1), 1: (1, 0, 2), 2: (0, 1, 2)}[code]  # bundle (i, j, k) axes of the slice
    torch.testing.assert_close(x[0, pe0 + fixed], torch.full((32, 32), (40 - 63.5) / 128))
    torch.testing.assert_close(x[0, pe0 + rows], grid[:, None].expand(32, 32))
    torch.testing.assert_close(x[0, pe0 + cols], grid[None, :].expand(32, 32))

    net = build_perx2ct("small", sampler(), **_official_conventions()).eval()
    official_index = 127 - 40 if code == 0 else 40  # axial runs the other way (official i0 = 127 - k)
    x, y, out = _decoder_io(net, axis, 40)
    p = x[0, pe0 : pe0 + 3]  # official world (p0, p1, p2)
    o_fixed, o_rows, o_cols = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}[code]  # official (i0, i1, i2) axes
    torch.testing.assert_close(p[o_fixed], torch.full((32, 32), (official_index - 63.5) / 128))
    torch.testing.assert_close(p[o_rows], grid[:, None].expand(32, 32))
    torch.testing.assert_close(p[o_cols], grid[None, :].expand(32, 32))
    back = y[0, 0].T if code == 0 else torch.rot90(y[0, 0], -1, [0, 1])  # project[r, c] = official[c, r] / [n-1-c, r]
    torch.testing.assert_close(out[0, 0], back, rtol=0, atol=0)


def test_official_image_orientation_and_intensity_attribute():
    """Official mode: the encoder sees fliplr(PA) and rot90(lateral, 1); the maps handed to the sampler are turned
    back into this bundle's image convention. ``input_intensity`` says how inference scales the images."""
    net = build_perx2ct(
        "small", sampler(), view_transforms={"pa": "fliplr", "lateral": "rot90"}, input_intensity="8bit"
    ).eval()
    assert net.input_intensity == "8bit" and build_perx2ct("small", sampler()).input_intensity == "max_normalized"
    seen = []
    net.encoder.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out[0].clone())))
    image = torch.rand(1, 2, 128, 128)
    with torch.no_grad():
        maps, _ = net.encode(image)
    torch.testing.assert_close(seen[0][0][0, 0], image[0, 0].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(seen[1][0][0, 0], torch.rot90(image[0, 1], 1, [0, 1]), rtol=0, atol=0)
    torch.testing.assert_close(maps[0], seen[0][1].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(maps[1], torch.rot90(seen[1][1], -1, [2, 3]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown view transform 'mirror'"):
        build_perx2ct("small", sampler(), view_transforms={"pa": "mirror"})
    with pytest.raises(ValueError, match="unknown input_intensity"):
        build_perx2ct("small", sampler(), input_intensity="16bit")
    with pytest.raises(ValueError, match="unknown slice_layout"):
        build_perx2ct("small", sampler(), slice_layout="transposed")


def test_legacy_presets_are_data_over_the_paper_presets():
    """The official presets differ from paper / paper_global only in convention fields (same weights layout) and
    select the official sampling; the legacy network scripts for export."""
    from scripts.networks import LEGACY_PRESETS

    convention = {
        "positional_encoding",
        "slice_layout",
        "view_transforms",
        "input_intensity",
        "sampler_options",
        "encoder",
    }
    for normal, legacy in LEGACY_PRESETS.items():
        a, b = MODEL_PRESETS[normal], MODEL_PRESETS[legacy]
        assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} <= convention
        assert {**b["encoder"], "freeze_stem": None} == {**a["encoder"], "freeze_stem": None}
    g = ProjectionGeometry.from_preset("perx2ct_official")
    with torch.device("meta"):
        net = build_perx2ct("paper_official", PerspectiveSampler(g))
    assert net.sampler.options() == {"align_corners": True, "visibility_mask": False}
    assert net.slice_layout == "official" and net.input_intensity == "8bit"
    assert net.encoder.freeze_stem is False  # the official run trained its stem (tests/test_encoder_stem.py)
    small = build_perx2ct("small", PerspectiveSampler(g), **_official_conventions()).eval()
    scripted = torch.jit.script(small)
    image, axis = torch.rand(1, 2, 128, 128), torch.tensor([[0, 1, 2]])
    index = torch.tensor([[3.0, 64.5, 127.0]])
    box = torch.tensor([[[0.0, 0.0, 128.0], [10.0, 20.0, 32.0], [64.0, 0.0, 64.0]]])
    with torch.no_grad():
        torch.testing.assert_close(scripted(image, axis, index, box), small(image, axis, index, box), rtol=0, atol=1e-5)
