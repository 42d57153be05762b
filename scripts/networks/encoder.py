"""2D ResNet encoder shared by both views (MONAI's ResNet; torchvision's ImageNet weights load from a local file).

Local features come from the end of ``layer2`` (1/8 of the input: 512 channels at 16 x 16 for a 128
input with ResNet-101). The optional global branch continues into ``layer3``: all its blocks but the
last, then only the first conv + norm + ReLU of the last block (a 1x1 conv to the block's inner width,
256 for ResNet-101), spatially averaged: one 256-d vector per view. Layers that are not used are not
built, so parameter counts are those of the model that runs. Nothing is ever downloaded.

Parameter arithmetic for ResNet-101 (BatchNorm included): stem 9,536; layer1 215,808; layer2
1,219,584 (local encoder 1,444,928); global branch: layer3 blocks 0..21 24,973,312 (block 0 with its
projection shortcut 1,512,448, then 21 x 1,117,184) + block 22's conv1/bn1 262,656 = 25,235,968.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["ResNetEncoder", "IMAGENET_MEAN", "IMAGENET_STD", "ENCODER_WEIGHTS_COMMAND", "random_encoder_warning"]

logger = logging.getLogger(__name__)

#: The command that fetches the ImageNet ResNet-101 weights (``scripts/assets/pretrained.py``).
ENCODER_WEIGHTS_COMMAND = "python -m scripts download_weights --name resnet101 --output_dir models/pretrained"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _FirstConv(nn.Module):
    """The first conv + norm + activation of a ResNet block (keeps the block's key names: ``conv1``, ``bn1``)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act = block.conv1, block.bn1, block.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv1(x)))


def _mark_loaded(module: nn.Module, incompatible_keys) -> None:
    """State-dict post hook: weights loaded from a checkpoint are not random (ImageNet loading renames it after)."""
    module.weights_source = "checkpoint"


def random_encoder_warning(network: nn.Module, log: logging.Logger | None = None) -> str | None:
    """Log a warning (and return it) when the encoder of ``network`` (a :class:`~scripts.networks.PerX2CT`, possibly
    wrapped in DistributedDataParallel, or the encoder itself) starts from random weights although ImageNet weights
    exist for its architecture (ResNet-101 layout); None otherwise.

    :meth:`PerX2CT.train` calls it once, when training starts: the paper's recipe initialises the ResNet from
    ImageNet, and a run that does not says so. Weights loaded from a checkpoint before (``--init_ckpt``, resume)
    count as trained.
    """
    net = getattr(network, "module", network)
    enc = getattr(net, "encoder", net)
    if getattr(enc, "weights_source", "random") != "random":
        return None
    if not getattr(enc, "imagenet_layout", True):  # e.g. the `small` preset: no ImageNet weights exist for it
        (log or logger).info("encoder starts from random weights (this architecture has no ImageNet weights)")
        return None
    msg = (
        "encoder starts from random weights: not the paper's recipe (ImageNet-initialised ResNet); get them with "
        f"`{ENCODER_WEIGHTS_COMMAND}` and pass the file as --encoder_weights"
    )
    (log or logger).warning(msg)
    return msg


class ResNetEncoder(nn.Module):
    """Grey radiographs (B, 1, H, W) in [0, 1] -> local features (B, C2, H/8, W/8) [and global (B, C3)].

    Args:
        block: ``"bottleneck"`` (ResNet-50/101) or ``"basic"`` (ResNet-18/34).
        layers: blocks in layer1, layer2[, layer3] (ResNet-101: 3, 4, 23).
        widths: base widths of layer1..3 (64, 128, 256; the bottleneck expands them 4x).
        global_features: also run the global branch (layer3 up to its last block's first conv) and return
            its spatial mean (B, widths[2]).
        freeze_stem: freeze the parameters of conv1/bn1 (``requires_grad=False``). Default ``False``: the stem
            trains, as it did in the official run. The official code freezes it when ImageNet weights are loaded
            (``encoder_freeze_layer: layer1``, ``x2ct_nerf/modules/image_encoder/resnet.py:87-91`` @ be4c354), but
            it configures two optimizers (``x2ct_nerf/models/aegan.py:165-172``), so PyTorch Lightning 1.0.8 calls
            ``toggle_optimizer`` before every training step (``trainer/training_loop.py:687-689``), which sets
            ``requires_grad=True`` on every parameter of the first optimizer, conv1/bn1 included
            (``core/lightning.py:1260-1278``): the freeze is undone from the first step and Adam updates the
            stem. ``True`` freezes it (what the official code meant); ``None`` = frozen iff ``weights`` are
            given (this bundle's behaviour before 0.3.x). bn1 uses and updates batch statistics in training
            either way.
        weights: optional local path to a torchvision-layout ResNet state dict (ImageNet); keys of layers
            that are not built (layer3/4 for the local-only model, fc) are ignored.

    Attributes:
        weights_source: ``"imagenet:<path>"`` when ImageNet weights were loaded, ``"checkpoint"`` once a state dict
            was loaded into the network (a checkpoint, ``--init_ckpt``, a resumed run), else ``"random"`` (see
            :func:`random_encoder_warning`).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 23),
        widths: Sequence[int] = (64, 128, 256),
        global_features: bool = False,
        freeze_stem: bool | None = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        widths = tuple(int(w) for w in widths)
        if len(layers) < 2 + int(global_features) or len(widths) < 2 + int(global_features):
            raise ValueError(f"layers and widths need {2 + int(global_features)} entries, got {layers}, {widths}")
        depth = 3 if global_features else 2
        full_layers = list(layers[:depth]) + [1] * (4 - depth)
        full_widths = list(widths[:depth]) + [widths[depth - 1] * 2] * (4 - depth)
        net = ResNet(
            block=block,
            layers=full_layers,
            block_inplanes=full_widths,
            spatial_dims=2,
            n_input_channels=3,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
        )
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        expansion = 4 if block == "bottleneck" else 1
        self.local_channels = widths[1] * expansion
        self.global_features = bool(global_features)
        if global_features:
            layer3 = net.layer3
            layer3[len(layer3) - 1] = _FirstConv(layer3[len(layer3) - 1])  # 1x1 conv to the inner width
            self.layer3 = layer3
        else:
            self.layer3 = nn.Identity()
        self.global_channels = widths[2] if global_features else 0
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.weights_source = "random"
        # torchvision's ImageNet ResNet-50/101/152 up to layer2 (and ResNet-101's layer3 for the global branch)
        self.imagenet_layout = (
            block == "bottleneck"
            and layers[:2] == (3, 4)
            and widths[:2] == (64, 128)
            and (not global_features or (layers[2], widths[2]) == (23, 256))
        )
        self.register_load_state_dict_post_hook(_mark_loaded)
        if weights is not None:
            self.load_imagenet(weights)
        self.freeze_stem = (weights is not None) if freeze_stem is None else bool(freeze_stem)
        if self.freeze_stem:
            for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
                p.requires_grad_(False)

    def load_imagenet(self, path: str) -> None:
        """Load a torchvision-layout ResNet state dict from ``path`` (never downloads)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"encoder weights not found: {path} (a local torchvision ResNet state dict, e.g. resnet101 ImageNet); "
                f"set encoder_weights to null to start from random weights"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own}
        missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"{path} does not fit this encoder: {len(missing)} missing keys, e.g. {missing[:3]}")
        bad = [k for k, v in usable.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(f"{path}: shape mismatch for {bad[:3]} (is it the right ResNet depth?)")
        self.load_state_dict(usable, strict=False)
        self.weights_source = f"imagenet:{path}"
        logger.info("loaded encoder weights from %s (%d tensors)", path, len(usable))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 1, H, W) in [0, 1]. Returns (local (B, C2, H/8, W/8), global (B, C3) or (B, 0))."""
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        local = self.layer2(self.layer1(x))
        if self.global_features:
            glob = self.layer3(local).mean(dim=(2, 3))
        else:
            glob = local.new_zeros(local.shape[0], 0)
        return local, glob
