"""bf16 inference: ReconstructionInferer(amp_dtype=...) runs the network under bf16 autocast on the inputs'
device and hands back float32; fp32 stays plain; bad names fail with the choices."""

from __future__ import annotations

import pytest
import torch
from scripts.inference.inferers import ReconstructionInferer, autocast_dtype


class _Net(torch.nn.Module):
    """reconstruct() reports the autocast state it ran under and does one matmul (bf16 under autocast)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4) + 1e-3)
        self.seen = None

    def reconstruct(self, image, axes=None):
        self.seen = (torch.is_autocast_enabled(image.device.type), torch.get_autocast_dtype(image.device.type))
        return (image.reshape(-1, 4) @ self.w).reshape(1, 1, 2, 2, 2)


def test_bf16_autocast_on_cpu():
    net, x = _Net(), torch.rand(1, 8)
    ref = ReconstructionInferer(axes=["axial"])(x, net)
    assert net.seen[0] is False and ref.dtype == torch.float32
    out = ReconstructionInferer(axes=["axial"], amp_dtype="bf16")(x, net)
    assert net.seen == (True, torch.bfloat16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)  # bf16 keeps 8 bits of mantissa
    assert not torch.equal(out, ref)  # it really ran in bf16


def test_autocast_dtype_names():
    assert autocast_dtype(None) is None and autocast_dtype("fp32") is None and autocast_dtype(torch.float32) is None
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("BFloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype must be 'fp32' or 'bf16'"):
        autocast_dtype("fp16")
