"""Training curves as a PNG: losses, pseudo-Dice (per class and EMA), learning rate per epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnseg.atomic import atomic_path


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike, class_names: list[str]) -> Path:
    """Draw ``history`` (one dict per epoch) to ``path`` atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_dice, ax_lr) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if any("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_loss", float("nan")) for h in history], label="val loss")
        for index, name in enumerate(class_names):
            ax_dice.plot(
                epochs,
                [h["pseudo_dice"][index] if "pseudo_dice" in h else float("nan") for h in history],
                label=f"pseudo-Dice {name}",
                alpha=0.6,
            )
        ax_dice.plot(epochs, [h.get("ema_pseudo_dice", float("nan")) for h in history], label="EMA mean", lw=2)
        ax_dice.set_ylim(0, 1)
        ax_dice.legend(loc="lower right")
    ax_dice.set_ylabel("pseudo-Dice")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right")
    ax_lr.plot(epochs, [h["lr"] for h in history])
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path
