"""Training recipes: the choice of recipe, the schedule with warm-up, overrides, head-bias priors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnseg.checkpoint import Checkpoint, CheckpointError, LogitAdjustment
from nnseg.networks import create
from nnseg.options import OptionError
from nnseg.recipes import (
    ADJUSTMENT_EPOCHS,
    ADJUSTMENT_STRENGTHS,
    RECIPES,
    SHORT_RUN_ITERATIONS,
    choose_adjustment_strength,
    choose_recipe,
)
from nnseg.training.config import TrainConfig
from nnseg.training.heads import logit_adjustment, set_head_bias_to_prior
from nnseg.training.loop import Trainer, train


def test_auto_takes_the_presets_recipe_else_chooses_by_length() -> None:
    assert choose_recipe("auto", preset_recipe="small_budget", total_iterations=250_000).name == "small_budget"
    assert choose_recipe("auto", preset_recipe="auto", total_iterations=250_000).name == "nnunet"
    assert choose_recipe("auto", preset_recipe="auto", total_iterations=SHORT_RUN_ITERATIONS).name == "small_budget"
    assert choose_recipe("nnunet", preset_recipe="small_budget", total_iterations=300).name == "nnunet"
    with pytest.raises(OptionError, match="--recipe must be one of auto, nnunet, small_budget"):
        choose_recipe("adam", preset_recipe="auto", total_iterations=1)
    with pytest.raises(OptionError, match="recipe must be one of"):
        TrainConfig(recipe="fast")


def test_the_default_long_schedule_is_nnunets_recipe_unchanged() -> None:
    recipe = choose_recipe("auto", preset_recipe="auto", total_iterations=1000 * 250)
    assert (recipe.optimizer, recipe.initial_lr, recipe.momentum, recipe.weight_decay) == ("sgd", 0.01, 0.99, 3e-5)
    assert (recipe.warmup_fraction, recipe.poly_exponent, recipe.schedule_per_iteration) == (0.0, 0.9, False)
    assert recipe.oversample_foreground == pytest.approx(1 / 3) and not recipe.head_bias_prior
    # nnU-Net's poly decay: constant within an epoch, (1 - epoch / epochs) ** 0.9
    rates = [recipe.learning_rate(i, 250, 250_000) for i in (0, 249, 250, 125_000, 249_999)]
    assert rates[:2] == [0.01, 0.01]
    assert rates[2] == pytest.approx(0.01 * (1 - 1 / 1000) ** 0.9)
    assert rates[3] == pytest.approx(0.01 * 0.5**0.9) and rates[4] == pytest.approx(0.01 * (1 / 1000) ** 0.9)
    optimizer = recipe.make_optimizer([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]


def test_small_budget_warms_up_then_decays_every_iteration() -> None:
    recipe = RECIPES["small_budget"]
    total = 300
    warmup = round(recipe.warmup_fraction * total)
    rates = [recipe.learning_rate(i, 25, total) for i in range(total)]
    assert warmup > 0 and all(a < b for a, b in zip(rates[:warmup], rates[1 : warmup + 1]))
    assert rates[warmup] == pytest.approx(recipe.initial_lr)
    assert all(a > b for a, b in zip(rates[warmup:], rates[warmup + 1 :]))
    assert rates[-1] < 0.05 * recipe.initial_lr
    assert isinstance(recipe.make_optimizer([torch.nn.Parameter(torch.zeros(2))]), torch.optim.AdamW)


def test_options_override_single_fields() -> None:
    recipe = RECIPES["small_budget"].with_overrides(initial_lr=0.02, optimizer=None)
    assert recipe.initial_lr == 0.02 and recipe.optimizer == "adamw" and recipe.name == "small_budget+initial_lr"
    assert RECIPES["nnunet"].with_overrides(initial_lr=None) is RECIPES["nnunet"]


def test_head_bias_prior_sets_every_head() -> None:
    network = create("unet", in_channels=1, classes=3, patch_size=(32, 32, 32), base_features=4, deep_supervision=True)
    outputs = network.train()(torch.zeros(2, 1, 32, 32, 32))
    frequencies = torch.tensor([0.9, 0.09, 0.01])
    # the output block and every deep-supervision head
    assert set_head_bias_to_prior(network, frequencies) == (len(outputs) if isinstance(outputs, list) else 1)
    probabilities = torch.softmax(network.eval()(torch.zeros(1, 1, 32, 32, 32)), 1)
    assert probabilities[0, :, 16, 16, 16].argmax() == 0


def test_the_run_records_its_recipe_and_a_resume_keeps_it(preprocessed_work: Path) -> None:
    config = TrainConfig(fold=0, epochs=1, iters_per_epoch=2, val_iters=1, device="cpu", tracking=False)
    train(preprocessed_work, config, show_progress=False)
    latest = preprocessed_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_latest.pt"
    state = Checkpoint.load(latest).training
    assert state is not None and state.recipe is not None
    assert state.recipe["name"] == "small_budget"  # the cpu preset's recipe
    more = TrainConfig(fold=0, epochs=2, iters_per_epoch=2, val_iters=1, device="cpu", tracking=False)
    assert Trainer(preprocessed_work, more, show_progress=False).recipe.name == "small_budget"
    changed = TrainConfig(**{**more.__dict__, "optimizer": "sgd"})
    with pytest.raises(Exception, match="would change it mid-run"):
        Trainer(preprocessed_work, changed, show_progress=False)


def test_class_weights_follow_the_frequency_power() -> None:
    frequencies = np.array([0.98, 0.0196, 0.0004])
    assert RECIPES["nnunet"].class_weights(frequencies) is None  # nnU-Net: unweighted
    weights = RECIPES["nnunet"].with_overrides(class_weight_power=0.5).class_weights(frequencies)
    assert weights is not None and weights[0] == 1.0
    assert weights == pytest.approx([1.0, (0.98 / 0.0196) ** 0.5, (0.98 / 0.0004) ** 0.5])


def test_logit_adjustment_undoes_the_class_weights_on_every_head() -> None:
    network = create("unet", in_channels=1, classes=3, patch_size=(32, 32, 32), base_features=4, deep_supervision=True)
    assert logit_adjustment(network, None) is None  # unweighted training: nothing to undo
    weights = np.array([1.0, 5.0, 20.0])
    adjustment = logit_adjustment(network, weights)
    assert adjustment is not None and adjustment.offsets == pytest.approx([0.0, -np.log(5.0), -np.log(20.0)])
    state = network.state_dict()
    assert len(adjustment.biases) == len(network.segmentation_heads()) and set(adjustment.biases) <= set(state)
    adjusted = adjustment.apply(state, "test")
    for key in adjustment.biases:
        assert torch.allclose(adjusted[key], state[key] + torch.tensor(adjustment.offsets))
    untouched = [k for k in state if k not in adjustment.biases]
    assert all(adjusted[k] is state[k] for k in untouched)
    with pytest.raises(CheckpointError, match="logit_adjustment names missing.bias"):
        LogitAdjustment(("missing.bias",), (0.0, 1.0, 2.0)).apply(state, "test")


def test_a_weighted_run_records_its_logit_adjustment_and_predicts_with_it(preprocessed_work: Path) -> None:
    """The small_budget recipe weighs the cross-entropy; the checkpoint keeps the weights as trained (a resume
    continues them bit for bit) and the offsets prediction adds: the chosen strength x -log(weight) per class."""
    config = TrainConfig(fold=0, epochs=2, iters_per_epoch=2, val_iters=1, device="cpu", tracking=False)
    trainer = Trainer(preprocessed_work, config, show_progress=False)
    trainer.run()
    weights = trainer.loss.class_weights
    assert weights is not None and trainer.full_adjustment is not None
    assert trainer.full_adjustment.offsets == pytest.approx((-torch.log(weights)).tolist())
    for record in trainer.history:  # every strength tried on every validated epoch, the choice recorded
        assert len(record["adjustment_pseudo_dice"]) == len(ADJUSTMENT_STRENGTHS)
        assert record["adjustment_strength"] in ADJUSTMENT_STRENGTHS
    assert trainer.adjustment_strength == choose_adjustment_strength(trainer.history)
    fold = preprocessed_work / "models" / "3d_fullres" / "fold_0"
    final = Checkpoint.load(fold / "checkpoint_final.pt")
    assert final.logit_adjustment == trainer.full_adjustment.scaled(trainer.adjustment_strength)
    trainer.adjustment_strength = 0.5  # what a checkpoint records at a strength
    recorded = trainer._checkpoint(1, finished=True, with_training=False)
    assert recorded.logit_adjustment is not None and recorded.logit_adjustment.strength == 0.5
    assert recorded.logit_adjustment.offsets == pytest.approx((-0.5 * torch.log(weights)).tolist())
    recorded.save(fold / "checkpoint_final.pt")
    assert Checkpoint.load(fold / "checkpoint_final.pt").logit_adjustment == recorded.logit_adjustment
    head = recorded.logit_adjustment.biases[0]
    expected = recorded.network_state[head] + torch.tensor(recorded.logit_adjustment.offsets)
    assert torch.allclose(recorded.inference_state()[head], expected)
    from nnseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoints(fold, device="cpu", backend="torch")
    assert torch.equal(predictor.networks[0].state_dict()[head], recorded.inference_state()[head])


def test_the_strength_is_the_best_on_the_last_validated_epochs() -> None:
    assert choose_adjustment_strength([]) == 0.0  # nothing validated: the weights as trained
    older = {"adjustment_pseudo_dice": [0.0, 0.0, 0.0, 0.0, 0.9]}  # beyond the last ADJUSTMENT_EPOCHS
    recent = {"adjustment_pseudo_dice": [0.5, 0.6, 0.7, 0.6, 0.5]}
    history = [older, *[recent] * ADJUSTMENT_EPOCHS, {"train_loss": 1.0}]
    assert choose_adjustment_strength(history) == 0.5
    tied = {"adjustment_pseudo_dice": [0.7, 0.7, 0.7, 0.7, 0.7]}
    assert choose_adjustment_strength([tied]) == 0.0  # the weakest on a tie


def test_unweighted_runs_and_older_checkpoints_have_no_adjustment(preprocessed_work: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        fold=0, epochs=1, iters_per_epoch=1, val_iters=1, device="cpu", tracking=False, recipe="nnunet"
    )
    train(preprocessed_work, config, show_progress=False)
    final = preprocessed_work / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    checkpoint = Checkpoint.load(final)
    assert checkpoint.logit_adjustment is None and checkpoint.inference_state() is checkpoint.network_state
    payload = torch.load(final, weights_only=True)
    del payload["logit_adjustment"]  # written before nnseg recorded it
    torch.save(payload, tmp_path / "old.pt")
    assert Checkpoint.load(tmp_path / "old.pt").logit_adjustment is None
    payload["logit_adjustment"] = {"biases": "decoder", "offsets": [0.0]}
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(
        CheckpointError,
        match="edited.pt: damaged checkpoint .logit_adjustment must hold biases and offsets lists and a strength",
    ):
        Checkpoint.load(tmp_path / "edited.pt")
