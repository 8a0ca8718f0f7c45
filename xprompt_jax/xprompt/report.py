"""XPrompt run report: report.json, report.md and PNG plots in MODEL_DIR.

- `importance_heatmap.png`: tokens x pieces importance (piece scores of the full prompt),
  pruned cells greyed (the paper's Figures 9-10).
- `token_scores_hist.png`, `piece_scores_hist.png`: score histograms (Figures 6-7).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping

import numpy as np

from ..training.checkpointing import write_json_atomic
from . import pruning
from .scoring import ImportanceScores


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_importance_heatmap(piece_scores: np.ndarray, token_mask: np.ndarray,
                            piece_mask: np.ndarray, path: str) -> None:
    """Heatmap `[m, k]` of piece importance; pruned (token or piece) cells in grey."""
    plt = _plt()
    import matplotlib

    kept = pruning.effective_piece_mask(token_mask, piece_mask) > 0
    data = np.ma.masked_where(~kept, np.asarray(piece_scores, np.float64))
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap = cmap.with_extremes(bad="lightgrey")
    m, k = data.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * k + 2), max(3, 0.3 * m + 1.5)))
    image = ax.imshow(data, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xlabel("piece")
    ax.set_ylabel("prompt token")
    ax.set_title(f"piece importance (grey: pruned; {int(kept.sum())}/{m * k} kept)")
    fig.colorbar(image, ax=ax, label="E|dL/dzeta|")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histogram(values: np.ndarray, title: str, path: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(np.asarray(values, np.float64).ravel(), bins=30, color="#4C72B0")
    ax.set_title(title)
    ax.set_xlabel("importance score")
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def markdown(report: Mapping[str, Any]) -> str:
    params = report["parameters"]
    final = report["final_eval"]
    stage1 = report["stage1"].get("eval") or {}
    lines = [
        "# XPrompt report", "",
        f"- run: `{report['model_dir']}`",
        f"- mask variant: `{report['mask_variant']}`; pruning levels: "
        f"{', '.join(report['prune_levels'])}; importance: "
        f"{'per example' if report['per_example_scores'] else '|batch gradient|'} over "
        f"{report['num_score_examples']} training examples",
        f"- prompt: {report['prompt_length']} tokens x {report['embed_dim']} dims, "
        f"{report['num_pieces']} pieces per token", "",
        "## Result", "",
        "| | dev main metric | trainable parameters |",
        "|---|---|---|",
        f"| prompt tuning (stage 1, step {report['stage1']['best_step']}) | "
        f"{_fmt(stage1.get('main_metric'))} | {params['prompt_tuning']} |",
        f"| XPrompt (rewound, step {final.get('checkpoint_step')}) | "
        f"{_fmt(final.get('main_metric'))} | {params['xprompt']} |", "",
        f"Surviving tokens: {params['surviving_tokens']} / {report['prompt_length']}; surviving "
        f"pieces: {params['surviving_pieces']} / {report['prompt_length'] * report['num_pieces']}"
        f" (parameters = surviving pieces x e/k).", "",
    ]
    search = report["search"]
    for level in ("token", "piece"):
        rows = search.get(f"{level}_candidates") or []
        if not rows:
            continue
        lines += [f"## {level.capitalize()}-level candidates (stage-1 prompt, no retraining)", "",
                  "| ratio | dev main metric | chosen |", "|---|---|---|"]
        for row in rows:
            chosen = "yes" if row["name"] == search.get(f"best_{level}") else ""
            lines.append(f"| {row['ratio']:.0%} | {_fmt(row['main_metric'])} | {chosen} |")
        lines.append("")
    lines += ["## Plots", "", "![importance](importance_heatmap.png)", "",
              "![token scores](token_scores_hist.png) ![piece scores](piece_scores_hist.png)", ""]
    return "\n".join(lines)


def write_report(model_dir: str, report: Dict[str, Any], scores: ImportanceScores,
                 token_mask: np.ndarray, piece_mask: np.ndarray) -> None:
    plot_importance_heatmap(scores.piece, token_mask, piece_mask,
                            os.path.join(model_dir, "importance_heatmap.png"))
    plot_histogram(scores.token, "token importance (full prompt)",
                   os.path.join(model_dir, "token_scores_hist.png"))
    plot_histogram(scores.piece, "piece importance (full prompt)",
                   os.path.join(model_dir, "piece_scores_hist.png"))
    report = dict(report)
    report["scores"] = scores.to_json()
    report["plots"] = ["importance_heatmap.png", "token_scores_hist.png", "piece_scores_hist.png"]
    write_json_atomic(os.path.join(model_dir, "report.json"), json.loads(json.dumps(
        report, default=lambda o: np.asarray(o).tolist())))
    tmp = os.path.join(model_dir, "report.md.tmp")
    with open(tmp, "w") as f:
        f.write(markdown(report))
    os.replace(tmp, os.path.join(model_dir, "report.md"))
