"""PNG figures for a run: training curves and the confusion matrix (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.report import expected_calibration_error


def pyplot():
    """matplotlib.pyplot on the Agg backend; imported on first use, as only plots need it."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training servers
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: Path) -> Path:
    """Lay out, write the PNG, close the figure (pyplot keeps every open one); returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_history(history: dict, path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation, with phase changes marked."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(list(epochs)[: len(values)], values, style, label=(prefix or "train_") + key)
        phases = history.get("phase", [])
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", linewidth=0.8)
                ax.text(i + 0.6, ax.get_ylim()[1], phases[i], va="top", fontsize=8, color="grey")
        best = history.get("best_epoch")
        if best:
            ax.axvline(best, color="green", linewidth=0.8, linestyle=":")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    return save_figure(plt, fig, path)


def plot_confusion(report: dict, path: Path, title: str | None = None) -> Path:
    """Confusion matrix (rows true, columns predicted) with counts, from a classification report."""
    plt = pyplot()
    cm = np.asarray(report["confusion_matrix"])
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title or f"accuracy {report['accuracy'] * 100:.2f} % (n={cm.sum()})")
    return save_figure(plt, fig, path)


def plot_reliability(y, curves: dict, path: Path, bins: int = 15) -> Path:
    """Reliability diagram: accuracy against confidence per bin, one line per named set of probabilities."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    y = np.asarray(y)
    for name, probs in curves.items():
        p = np.asarray(probs, np.float64)
        conf, correct = p.max(1), p.argmax(1) == y
        which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
        xs = [conf[which == b].mean() for b in range(bins) if (which == b).any()]
        ys = [correct[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(xs, ys, "o-", label=f"{name} (ECE {100 * expected_calibration_error(y, p):.2f} %)")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"reliability (n={len(y)})")
    return save_figure(plt, fig, path)


def plot_risk_coverage(curve: dict, path: Path, refer_below: float | None = None) -> Path:
    """Error among accepted fields against the share accepted; the manifest's threshold marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    cov, risk = np.asarray(curve["coverage"]), np.asarray(curve["risk"])
    ax.plot(100 * cov, 100 * risk, "-")
    if refer_below is not None and len(cov):
        accepted = np.asarray(curve["threshold"]) >= refer_below
        c = float(accepted.mean())
        r = float(risk[accepted.sum() - 1]) if accepted.any() else 0.0
        ax.plot([100 * c], [100 * r], "o", color="red", label=f"refer below {refer_below:.3f}: "
                f"coverage {100 * c:.1f} %, error {100 * r:.2f} %")
        ax.legend(fontsize=8)
    ax.set_xlabel("coverage (% of fields decided, not referred)")
    ax.set_ylabel("error among decided (%)")
    ax.set_title("risk-coverage")
    return save_figure(plt, fig, path)
