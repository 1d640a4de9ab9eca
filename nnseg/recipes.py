"""Training recipes: optimizer, learning-rate schedule, loss weighting and head initialisation as named data.

``nnunet`` is nnU-Net v2's recipe, tuned for 250,000 iterations on a GPU: SGD with Nesterov
momentum 0.99, lr 0.01, poly decay per epoch, unweighted Dice + CE, one third of each batch
forced onto foreground. ``small_budget`` is for runs of a few hundred to a few thousand
iterations (a CPU, a quick experiment): AdamW (lr 3e-3, 5 % linear warm-up, poly decay per
iteration), the cross-entropy weighted per class by frequency ** -0.5, and output biases
starting at log(class frequency). A class-weighted cross-entropy shifts the decision boundaries towards
the up-weighted classes; the checkpoint records strength x -log(weight) per class as a logit adjustment that
every prediction applies (:class:`nnseg.checkpoint.LogitAdjustment`), the strength chosen on the run's
validation patches (:func:`choose_adjustment_strength`).

Chosen by measurement (``benchmarks/small_budget.py --iterations 300``: MR phantoms of 50^3 at
2.8 mm with structures of ~1,200, ~100 and 3 x ~30 voxels; Dice on 8 held-out cases after 300
iterations of the ``cpu`` preset, large / medium / small, mean):

==============================================  =====================  =====
nnunet                                          0.90 / 0.00 / 0.00     0.30
AdamW 3e-3, warm-up, poly per iteration         0.97 / 0.93 / 0.00     0.63
  same, lr 1e-3 / lr 1e-2                       mean 0.53 / 0.64
  + TopK-10 % cross-entropy (nnU-Net variant)   0.97 / 0.92 / 0.00     0.63
  + cross-entropy weights frequency ** -0.5     0.97 / 0.93 / 0.90     0.93
  + output bias at log(frequency)               0.97 / 0.96 / 0.86     0.93
  without deep supervision                      0.97 / 0.93 / 0.62     0.84
  + class weights + bias prior (small_budget)   0.98 / 0.94 / 0.89     0.94
SGD (nnunet) + class weights                    0.97 / 0.93 / 0.42     0.77
SGD (nnunet) + bias prior                       0.96 / 0.95 / 0.00     0.64
==============================================  =====================  =====

The smallest class is missed as long as the cross-entropy averages over all voxels: 90 voxels
of 110,000 weigh nothing in it, the network learns "background" there first, the softmax
saturates and the Dice term's gradient vanishes with it. Weighting the cross-entropy (or starting
from the class prior) keeps that gradient alive; AdamW makes every class learn in fewer steps.

``nnseg train --recipe auto`` (the default) takes ``small_budget`` when the plan's preset asks for
it (``"training_recipe"`` in ``plans/cpu.json``) or when the run is short (at most
``SHORT_RUN_ITERATIONS`` iterations), and ``nnunet`` otherwise, so the default preset's long
schedule is nnU-Net's recipe unchanged (the weights after two epochs are bit-identical to those
of nnseg before recipes existed). Any field can still be set on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nnseg.errors import NnsegError
from nnseg.options import OptionError

if TYPE_CHECKING:  # torch is imported where the optimizer is made: planning reads recipe names without it
    import torch

#: A run of at most this many iterations is "short": 10 % of nnU-Net's 1000 x 250.
SHORT_RUN_ITERATIONS = 25_000
#: strengths of the logit adjustment a class-weighted run chooses between (0: none; 1: -log(weight))
ADJUSTMENT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the choice averages the validation pseudo-Dice of this many last epochs
ADJUSTMENT_EPOCHS = 5


@dataclass(frozen=True)
class Recipe:
    """How the weights move.

    Attributes:
        name: the recipe's name (recorded in the MLflow run).
        optimizer: "sgd" (Nesterov) or "adamw".
        initial_lr: peak learning rate (reached after the warm-up).
        momentum: SGD momentum, or AdamW's beta1.
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
        warmup_fraction: fraction of all iterations over which the rate rises linearly from ~0.
        poly_exponent: after the warm-up, ``lr = initial_lr * (1 - progress) ** poly_exponent``.
        schedule_per_iteration: update the rate every iteration (True) or once per epoch (nnU-Net).
        oversample_foreground: fraction of each batch forced to contain foreground.
        head_bias_prior: start each output's bias at log(class frequency) (log odds per region for sigmoid
            outputs), so the first predictions match the label statistics instead of a uniform guess.
        topk_percent: cross-entropy over the hardest k % of voxels (100: over all, as nnU-Net's default).
        class_weight_power: weigh the cross-entropy of class c by ``frequency_c ** -power`` (normalized to
            a weighted mean; 0: unweighted, as nnU-Net; 0.5: inverse square root of the frequency); not
            applied to region (sigmoid) training.
    """

    name: str
    optimizer: Literal["sgd", "adamw"]
    initial_lr: float
    momentum: float
    weight_decay: float
    warmup_fraction: float
    poly_exponent: float
    schedule_per_iteration: bool
    oversample_foreground: float
    head_bias_prior: bool
    topk_percent: float = 100.0
    class_weight_power: float = 0.0

    def class_weights(self, frequencies: np.ndarray, objective: str = "softmax") -> np.ndarray | None:
        """Cross-entropy weights per class from voxel frequencies (None when unweighted, and for region
        (sigmoid) training, whose BCE has no classes to weigh against each other)."""
        if self.class_weight_power == 0 or objective == "sigmoid":
            return None
        weights = np.maximum(frequencies, 1e-6) ** -self.class_weight_power
        return weights / weights[0]

    def learning_rate(self, iteration: int, iters_per_epoch: int, total_iterations: int) -> float:
        """The rate for ``iteration`` (0-based) of a run of ``total_iterations``."""
        total = max(1, total_iterations)
        warmup = round(self.warmup_fraction * total)
        if iteration < warmup:
            return self.initial_lr * (iteration + 1) / (warmup + 1)
        if self.schedule_per_iteration:
            progress = (iteration - warmup) / max(1, total - warmup)
        else:
            progress = (iteration // iters_per_epoch) / max(1, math.ceil(total / iters_per_epoch))
        return self.initial_lr * max(0.0, 1 - progress) ** self.poly_exponent

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import torch

        if self.optimizer == "sgd":
            return torch.optim.SGD(
                parameters, lr=self.initial_lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay
            )
        return torch.optim.AdamW(
            parameters, lr=self.initial_lr, betas=(self.momentum, 0.999), weight_decay=self.weight_decay
        )

    def with_overrides(self, **values: Any) -> Recipe:
        """This recipe with the given fields replaced (None: keep this recipe's value)."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        return replace(self, name=f"{self.name}+" + ",".join(sorted(given)), **given)


RECIPES: dict[str, Recipe] = {
    "nnunet": Recipe(
        name="nnunet",
        optimizer="sgd",
        initial_lr=0.01,
        momentum=0.99,
        weight_decay=3e-5,
        warmup_fraction=0.0,
        poly_exponent=0.9,
        schedule_per_iteration=False,
        oversample_foreground=1 / 3,
        head_bias_prior=False,
    ),
    "small_budget": Recipe(
        name="small_budget",
        optimizer="adamw",
        initial_lr=3e-3,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_fraction=0.05,
        poly_exponent=0.9,
        schedule_per_iteration=True,
        oversample_foreground=1 / 3,
        head_bias_prior=True,
        class_weight_power=0.5,
    ),
}
RECIPE_CHOICES = ("auto", *RECIPES)
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe) if f.name != "name")


def choose_recipe(name: str, *, preset_recipe: str, total_iterations: int) -> Recipe:
    """The recipe ``name`` (or, for "auto", the preset's when it names one, else by the run's length)."""
    if name == "auto":
        if preset_recipe != "auto":
            name = preset_recipe
        else:
            name = "small_budget" if total_iterations <= SHORT_RUN_ITERATIONS else "nnunet"
    if name not in RECIPES:
        raise OptionError(f"--recipe must be one of {', '.join(RECIPE_CHOICES)}, got {name!r}")
    return RECIPES[name]


def resumed_recipe(stored: dict[str, Any] | None, overrides: dict[str, Any], checkpoint: Path) -> Recipe:
    """A resumed run's recipe (as its checkpoint recorded it); refuses options that would change it."""
    recipe = Recipe(**stored) if stored else RECIPES["nnunet"]  # checkpoints from before recipes trained with SGD
    differ = [name for name, value in overrides.items() if value is not None and value != getattr(recipe, name)]
    if differ:
        flags = ", ".join("--" + name.replace("_", "-") for name in differ)
        raise NnsegError(
            f"{checkpoint}: this fold trains with recipe {recipe.name}; {flags} would change it mid-run. "
            "Drop the option(s) to resume, or rerun with --fresh"
        )
    return recipe


def recipe_name(name: str, value: Any) -> str:
    """Validator for ``--recipe``."""
    if value not in RECIPE_CHOICES:
        raise OptionError(f"{name} must be one of {', '.join(RECIPE_CHOICES)}, got {value!r}")
    return str(value)


def optimizer_name(name: str, value: Any) -> str:
    """Validator for ``--optimizer``."""
    if value not in ("sgd", "adamw"):
        raise OptionError(f"{name} must be sgd or adamw, got {value!r}")
    return str(value)


def choose_adjustment_strength(history: Iterable[dict[str, Any]]) -> float:
    """The strength whose mean pseudo-Dice over the last :data:`ADJUSTMENT_EPOCHS` validated epochs (the
    history's ``adjustment_pseudo_dice``, one value per strength of :data:`ADJUSTMENT_STRENGTHS`) is highest;
    the weakest on a tie, 0 before any validation."""
    rows = [record["adjustment_pseudo_dice"] for record in history if "adjustment_pseudo_dice" in record]
    if not rows:
        return 0.0
    means = np.mean(rows[-ADJUSTMENT_EPOCHS:], axis=0)
    return ADJUSTMENT_STRENGTHS[int(np.argmax(means))]
