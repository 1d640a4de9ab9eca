"""What training does to a network's segmentation heads: the class prior in their biases at the start, and the
logit adjustment a class-weighted run records for inference (:class:`nnseg.checkpoint.LogitAdjustment`)."""

from __future__ import annotations

import numpy as np
import torch

from nnseg.checkpoint import LogitAdjustment
from nnseg.networks.registry import segmentation_heads


def set_head_bias_to_prior(
    network: torch.nn.Module, class_frequencies: torch.Tensor, objective: str = "softmax"
) -> int:
    """Set the bias of every segmentation head to log(class frequency) (centred), or for region (sigmoid)
    outputs to the log odds of each region's frequency; returns the heads changed.

    Networks name their heads with ``segmentation_heads()`` (part of the network contract).
    """
    frequencies = class_frequencies.clamp(1e-6, 1 - 1e-6)
    if objective == "sigmoid":
        log_prior = torch.log(frequencies / (1 - frequencies))
    else:
        log_prior = torch.log(frequencies)
        log_prior = log_prior - log_prior.mean()
    changed = 0
    for head in segmentation_heads(network):
        bias = head.bias
        if not isinstance(bias, torch.Tensor) or bias.shape != log_prior.shape:
            raise ValueError(f"segmentation head {head} has no bias with one value per class ({len(log_prior)})")
        with torch.no_grad():
            bias.copy_(log_prior.to(bias))
        changed += 1
    return changed


def logit_adjustment(network: torch.nn.Module, class_weights: np.ndarray | None) -> LogitAdjustment | None:
    """The inference offsets -log(w_c) for the heads of ``network`` trained with cross-entropy weights ``w_c``
    (see :class:`nnseg.checkpoint.LogitAdjustment`); None for unweighted training."""
    if class_weights is None:
        return None
    names = {id(parameter): name for name, parameter in network.named_parameters()}
    biases = tuple(names[id(head.bias)] for head in segmentation_heads(network) if head.bias is not None)
    offsets = tuple(0.0 - float(np.log(w)) for w in class_weights)  # 0.0, not -0.0, for the background
    return LogitAdjustment(biases, offsets)
