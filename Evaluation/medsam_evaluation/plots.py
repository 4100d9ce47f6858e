"""The evaluation's pictures: mean DSC and NSD against the key-slice spacing, and the worst slices' montage.
Needs matplotlib (the ``eval`` extra)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import NSD_TOLERANCE_MM
from .methods import MODEL_METHODS, SPACING_FREE
from .records import WorstSlice


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dsc_vs_spacing(rows, methods, spacings, path) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for metric, ax in zip(("dsc", "nsd"), axes):
        for method in methods:
            means = []
            for spacing in spacings:
                values = [getattr(r, metric) for r in rows if r.method == method and r.spacing == spacing]
                means.append(np.mean(values) if values else np.nan)
            style = "--" if method in SPACING_FREE else ("-" if method in MODEL_METHODS else ":")
            ax.plot(list(spacings), means, style, marker="o", label=method)
        ax.set_xlabel("key-slice spacing N (slices)")
        ax.set_ylabel(f"mean {metric.upper()}" + (f" @ {NSD_TOLERANCE_MM:g} mm" if metric == "nsd" else ""))
        ax.set_xticks(list(spacings))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    n_cases = len({r.case for r in rows})
    fig.suptitle(f"Mean over {n_cases} cases: DSC and NSD against key-slice spacing")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_worst_slices(worst: Sequence[WorstSlice], path: str, columns: int = 4) -> str:
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    n = len(worst)
    rows_n = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.2 * columns, 3.4 * rows_n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, w in zip(axes.ravel(), worst):
        image = w.image if w.image.ndim == 2 else w.image[..., 0]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if w.reference.any():
            ax.contour(w.reference.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        if w.prediction.any():
            ax.contour(w.prediction.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        if w.box is not None:
            x0, y0, x1, y1 = w.box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="yellow",
                                   linewidth=0.8, linestyle="--"))
        ax.set_title(f"{w.case[:26]}\nslice {w.slice_index}: DSC {w.dsc:.2f}", fontsize=8)
    method = worst[0].method if worst else ""
    spacing = worst[0].spacing if worst else 0
    fig.suptitle(f"Worst slices, {method}, key boxes every {spacing}: reference (green), prediction (red), "
                 "box (yellow)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_fine_tune_curve(result, path: str) -> str:
    """``finetune``'s curve (a :class:`MedSAMSegmentLib.learning.finetune.FineTuned`): the training loss and the
    held-out slices' mean DSC per epoch, the bundled decoder's DSC as a line, the epoch kept marked."""
    plt = _pyplot()
    epochs = [record.epoch for record in result.history]
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [record.train_loss for record in result.history], marker="o")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (BCE + Dice)")
    dice_ax.plot([0] + epochs, [result.base_validation_dice] + [r.validation_dice for r in result.history],
                 marker="o", label="fine-tuned")
    dice_ax.axhline(result.base_validation_dice, color="grey", linestyle="--", label="bundled decoder")
    dice_ax.axvline(result.best_epoch, color="green", linestyle=":", label=f"kept (epoch {result.best_epoch})")
    dice_ax.set_xlabel("epoch")
    dice_ax.set_ylabel("held-out slices' mean DSC")
    dice_ax.legend(fontsize=8, loc="best")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Fine-tuning the decoder head: {result.train_examples} training views, "
                 f"{result.validation_examples} held out")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
