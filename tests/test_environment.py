"""The development environment: torch and torchvision are a pair that imports together, so MONAI Label's own
stock apps (which import torchvision) work beside the bundle's app."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch


def test_torchvision_is_built_for_this_torch():
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # a compiled torchvision operator: fails ("operator torchvision::nms does not exist") on a mismatched pair
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert torchvision.__version__.split("+")[0] == importlib.metadata.version("torchvision").split("+")[0]


@pytest.mark.parametrize("module", ["monailabel.transform.post", "monailabel.tasks.infer.basic_infer"])
def test_monai_label_stock_app_modules_import(module):
    importlib.import_module(module)
