"""nnU-Net v2 as the benchmarks' baseline: its folders, and a trainer that changes only the schedule's length.

nnU-Net finds trainer classes by name anywhere under ``nnunetv2/training/nnUNetTrainer``; the benchmarks
write theirs there (``variants/nnseg_bench/``) in the nnU-Net install they are given.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TRAINER_SOURCE = '''"""Written by nnseg's benchmarks: nnUNetTrainer with a short schedule, nothing else changed."""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iters}
        self.num_val_iterations_per_epoch = 5

    def on_train_end(self):
        super().on_train_end()
        if self.device.type == "cuda":
            print(f"NNSEG_PEAK_GPU_BYTES {{torch.cuda.max_memory_allocated(self.device)}}", flush=True)
'''


def nnunet_env(out: Path, *, augmentation_workers: int) -> dict[str, str]:
    """This process's environment plus nnU-Net's three folders under ``out/nnunet`` (created)."""
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (out / "nnunet" / key).mkdir(parents=True, exist_ok=True)
        env[key] = str(out / "nnunet" / key)
    env["nnUNet_n_proc_DA"] = str(augmentation_workers)
    env["nnUNet_compile"] = "f"  # eager, as nnseg trains by default (and no minutes of compilation on a CPU)
    return env


def install_trainer(python: str, prefix: str, epochs: int, iters: int) -> str:
    """Write ``<prefix><epochs>x<iters>`` into the nnU-Net install of ``python``; its name."""
    name = f"{prefix}{epochs}x{iters}"
    located = subprocess.run(
        [python, "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = Path(located.stdout.strip()) / "training" / "nnUNetTrainer" / "variants" / "nnseg_bench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").touch()
    (folder / f"{name}.py").write_text(TRAINER_SOURCE.format(name=name, epochs=epochs, iters=iters))
    return name
