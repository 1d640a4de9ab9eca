"""PredictConfig: how ``nnseg predict`` runs, as data (the command line is generated from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnseg import options
from nnseg.options import option

#: mirroring test-time augmentation: every flip combination, in-plane flips only, none
TTA_MODES = ("full", "fast", "none")
#: what runs the network (``auto``: :func:`nnseg.inference.backends.resolve_backend`)
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
#: backends that run on the CPU only
CPU_BACKENDS = ("openvino", "onnxruntime")
#: how label maps are written
OUTPUT_FORMATS = ("nifti", "dicom-seg")
#: ``nnseg export --format``, the runtime that runs each, and the precisions an export may have. TorchScript is
#: no longer offered: torch deprecates it (jit.save / jit.load warn), and its successor's loader
#: (``torch.export.load``) unpickles, which nnseg never does with a model file
EXPORT_FORMATS = ("onnx", "openvino")
EXPORT_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
EXPORT_PRECISIONS = ("fp32", "int8", "bf16")


@dataclass(frozen=True)
class PredictConfig:
    """Prediction settings; each field is also an ``nnseg predict`` option with this help."""

    configuration: str | None = option(
        None,
        "configuration of a work folder (default: 3d_fullres when trained, else the only one trained); other "
        "models predict their own",
        flag=("-c", "--config"),
        metavar="NAME",
    )
    folds: tuple[int | str, ...] | None = option(
        None,
        "folds to average (default: every cross-validation fold found; fold_all only when named or alone)",
        flag=("-f", "--folds"),
        validate=options.fold,
        metavar="K",
        many=True,
    )
    step_size: float = option(0.5, "window step as a fraction of the patch, in (0, 1]", validate=options.fraction)
    mirror: bool = option(True, "no mirroring test-time augmentation (the same as --tta none)", flag="--no-tta")
    tta: str = option(
        "full",
        "mirroring test-time augmentation: full (every flip combination, 2^dims passes per window, nnU-Net's), "
        "fast (in-plane axes only: 4 passes per 3D window, 2 per 2D one) or none",
        validate=options.choice(*TTA_MODES),
        metavar="MODE",
    )
    skip_air: bool = option(
        False, "CT models: don't run windows holding only air (HU <= -500 outside the body, 10 mm margin)"
    )
    save_probabilities: bool = option(False, "also write <case>.npz probabilities (for nnseg ensemble)")
    overwrite: bool = option(False, "replace existing predictions")
    overlay: bool = option(False, "also write <case>_overlay.png for quick QC")
    postprocess: bool = option(True, "ignore inference.json's postprocessing")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", validate=options.device)
    backend: str = option(
        "auto",
        "what runs the network: torch, openvino or onnxruntime (CPU only; checkpoints are converted once and "
        "cached in <fold>/.nnseg_cache/), or auto: openvino on the CPU when installed (fp32, faster), else torch",
        validate=options.choice(*BACKENDS),
        metavar="NAME",
    )
    window_batch: int = option(2, "windows per forward pass", validate=options.positive_int, metavar="N")
    prune: int | None = option(
        None,
        "UNet++ models: predict with the sub-network of depth L (1 = shallowest, fastest; default: the plan's "
        "prune_level, else the whole network); see benchmarks/architectures.py for the speed/Dice trade-off",
        validate=options.positive_int,
        metavar="L",
    )
    overlap: bool = option(True, "do not read the next case and write the last one while the network runs")
    output_format: str = option(
        "nifti",
        "nifti (label maps in the input's format and geometry) or dicom-seg (a DICOM Segmentation per DICOM "
        "series input, one segment per label, referencing the series)",
        validate=options.choice(*OUTPUT_FORMATS),
        metavar="FORMAT",
    )
    series: str | None = option(
        None, "the SeriesInstanceUID to read from DICOM folders holding several series", metavar="UID"
    )

    def __post_init__(self) -> None:
        options.validate_fields(self)
        if not self.mirror and self.tta != "none":
            if self.tta != "full":  # full is the default: --no-tta alone means none
                raise options.OptionError(f"--no-tta contradicts --tta {self.tta}; give one of them")
            object.__setattr__(self, "tta", "none")

    def predictor_settings(self) -> dict[str, Any]:
        """The :class:`~nnseg.inference.predictor.Predictor` settings these options ask for."""
        return {
            "backend": self.backend,
            "device": self.device,
            "tta": self.tta_mode,
            "skip_air": self.skip_air,
            "step_size": self.step_size,
            "window_batch": self.window_batch,
            "prune_level": self.prune,
        }

    @property
    def tta_mode(self) -> str:
        """The test-time augmentation to run: ``tta``, or none with ``--no-tta``."""
        return self.tta if self.mirror else "none"
