"""Figures written into the artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (recall per true class), with counts in the cells."""
    labels = metrics["confusion_matrix_labels"]
    counts = np.array(metrics["confusion_matrix"])
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    size = max(5.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, for each split given."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for name, section in metrics.items():
        if not isinstance(section, dict) or "reliability_bins" not in section:
            continue
        bins = section["reliability_bins"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{name} (ECE {section['ece']:.3f}, before {section['ece_uncalibrated']:.3f})")
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(metrics: dict[str, Any], path: Path, title: str) -> None:
    """ROC curves of a detector, per split, with the saved operating point marked."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, section in metrics.items():
        binary = section.get("binary") if isinstance(section, dict) else None
        if not binary or "roc_curve" not in binary:
            continue
        curve = binary["roc_curve"]
        line = ax.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {binary['roc_auc']:.3f})")[0]
        ax.scatter([binary["false_positive_rate"]], [binary["recall"]], color=line.get_color(), zorder=3)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (benign flagged)")
    ax.set_ylabel("recall (attacks caught)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_coverage(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Accuracy of the answered requests against the share answered, per consumer path (test),
    with each path's served operating point marked."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    tests = {"routeclf": metrics["test"]} | {name: m["test"] for name, m in metrics.get("paths", {}).items()
                                             if "test" in m}
    for name, test in tests.items():
        curve = test.get("coverage_curve")
        if not curve:
            continue
        line = ax.plot([p["coverage"] for p in curve], [p["answered_accuracy"] for p in curve], marker=".", label=name)[0]
        point = test["abstention"]
        if point["answered_accuracy"] is not None:
            ax.scatter([point["coverage"]], [point["answered_accuracy"]], color=line.get_color(), zorder=3, s=40)
    ax.set_xlabel("coverage (share of requests answered, most confident first)")
    ax.set_ylabel("accuracy of the answered requests")
    ax.set_xlim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
