"""What ``nnseg export`` checks and asks for, as plain values (no torch: the CLI builds its help from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nnseg.errors import NnsegError

#: largest |logit difference| from PyTorch an fp32 export may show, relative to the logits' scale
#: max(1, max |logit|): f32 error grows with the values. On nnU-Net's 32..320 U-Net trained 300 iterations
#: (logits up to 22), OpenVINO's f32 kernels differ by 0.012 on real patches (5e-4 of the scale; ONNX Runtime
#: 7.7e-4, PyTorch f32 vs f64 1.8e-5; label agreement 0.99999), so an absolute 1e-3 refused a sound export.
TOLERANCE = 1e-3
#: fraction of voxels of the parity patches whose label (argmax) must equal PyTorch's
MIN_LABEL_AGREEMENT = 0.999
#: default calibration patches per fold
CALIBRATION_PATCHES = 32
CALIBRATION_SEED = 0
#: default largest mean-Dice drop (fp32 minus int8) an int8 export may show on the fold's validation cases
MAX_DICE_DROP = 0.005
#: fraction of calibration patches centred on foreground (training's default sampling)
OVERSAMPLE_FOREGROUND = 1 / 3


@dataclass(frozen=True)
class QuantizationSettings:
    """What ``--int8`` was asked for."""

    calibration_patches: int = CALIBRATION_PATCHES
    seed: int = CALIBRATION_SEED
    max_dice_drop: float = MAX_DICE_DROP
    force: bool = False

    def check(self) -> None:
        if isinstance(self.calibration_patches, bool) or not (
            isinstance(self.calibration_patches, int) and self.calibration_patches >= 1
        ):
            raise NnsegError(f"--calibration-patches must be a positive integer, got {self.calibration_patches!r}")
        if not isinstance(self.max_dice_drop, (int, float)) or math.isnan(self.max_dice_drop):
            raise NnsegError(f"--max-dice-drop must be a number, got {self.max_dice_drop!r}")
