"""The main job's figures, drawn with matplotlib's Agg backend (files only, never a window).

Imported only when drawing, so ``import models`` does not import matplotlib.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display is needed or opened

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_prediction_functions(path: str | os.PathLike, x: np.ndarray, curves: Sequence[tuple[str, np.ndarray]],
                              x_train: np.ndarray, y_train: np.ndarray, title: str = "Prediction functions") -> None:
    """Each named curve ``(name, values at x)`` over [0, 1) with the training data (the homework's plot)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(x_train, y_train, s=12, color="k", label="Training data", zorder=3)
    for name, values in curves:
        ax.plot(x, values, label=name, linewidth=1.4)
    ax.set_xlabel("Input space: [0, 1)")
    ax.set_ylabel("Action/outcome space")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_decision_regions(path: str | os.PathLike, predict: Callable[[np.ndarray], np.ndarray],
                          X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                          title: str = "Multiclass MLP: decision regions") -> None:
    """The label ``predict`` gives on a grid, shaded, under the training (dots) and test (crosses) points."""
    points = np.concatenate([X_train, X_test])
    low, high = points.min(axis=0) - 1.0, points.max(axis=0) + 1.0
    grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], 300), np.linspace(low[1], high[1], 200))
    labels = predict(np.column_stack([grid_x.ravel(), grid_y.ravel()])).reshape(grid_x.shape)
    classes = int(max(labels.max(), y_train.max(), y_test.max())) + 1
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.contourf(grid_x, grid_y, labels, levels=np.arange(classes + 1) - 0.5, colors=[colors(k) for k in range(classes)],
                alpha=0.25)
    for k in range(classes):
        ax.scatter(*X_train[y_train == k].T, s=10, color=colors(k), label=f"class {k} (train)")
        ax.scatter(*X_test[y_test == k].T, s=18, color=colors(k), marker="x", label=f"class {k} (test)")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
