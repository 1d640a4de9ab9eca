"""PredictConfig: how ``nnseg predict`` runs, as data (the command line is generated from it)."""

from __future__ import annotations

from dataclasses import dataclass

from nnseg import options
from nnseg.options import option


@dataclass(frozen=True)
class PredictConfig:
    """Prediction settings; each field is also an ``nnseg predict`` option with this help."""

    configuration: str = option("3d_fullres", "configuration", flag=("-c", "--config"), metavar="NAME")
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
        validate=options.choice("full", "fast", "none"),
        metavar="MODE",
    )
    skip_air: bool = option(
        "no",
        "CT models: don't run windows holding only air (HU <= -500 outside the body, 10 mm margin)",
        validate=options.yes_no,
        metavar="yes|no",
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
        validate=options.choice("auto", "torch", "openvino", "onnxruntime"),
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
        validate=options.choice("nifti", "dicom-seg"),
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

    @property
    def tta_mode(self) -> str:
        """The test-time augmentation to run: ``tta``, or none with ``--no-tta``."""
        return self.tta if self.mirror else "none"
