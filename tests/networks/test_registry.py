"""nnseg.networks.create / available: networks by name outside a plan (segmentation_models.pytorch style)."""

from __future__ import annotations

import pytest
import torch

import nnseg.networks as networks


@pytest.mark.parametrize("name", list(networks.available()))
@pytest.mark.parametrize("dims, patch", [(3, (32, 48, 40)), (2, (64, 48))])
def test_every_architecture_is_created_by_name(name: str, dims: int, patch: tuple[int, ...]) -> None:
    net = networks.create(name, in_channels=3, classes=5, dims=dims, patch_size=patch, base_features=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, *patch))
    assert out.shape == (1, 5, *patch)
    assert networks.available()[name]  # a one-line description for --help and docs


def test_default_unet_matches_nnunet_size() -> None:
    net = networks.create("unet", in_channels=1, classes=3, dims=3, deep_supervision=True)
    ours = sum(p.numel() for p in net.parameters())
    # nnU-Net's PlainConvUNet for its 128^3 6-stage plan (the closed form in test_unet.py gives this number)
    assert abs(ours - 31_196_399) / 31_196_399 < 0.01


def test_bad_requests_say_what_is_allowed() -> None:
    with pytest.raises(KeyError, match="'segformer9'; available: unet"):
        networks.create("segformer9", in_channels=1, classes=2)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        networks.create("unet", in_channels=1, classes=2, dims=4)
    with pytest.raises(ValueError, match="patch_size needs 3 values"):
        networks.create("unet", in_channels=1, classes=2, patch_size=(64, 64))
