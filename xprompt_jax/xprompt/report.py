"""XPrompt's report: report.json, report.md and PNG plots in MODEL_DIR, written once
(`runs.report.write_report`) with the sections callers add (a summary above it, a next step
below it).

- `importance_heatmap.png`: tokens x pieces importance (piece scores of the full prompt),
  pruned cells greyed (the paper's Figures 9-10).
- `token_scores_hist.png`, `piece_scores_hist.png`: score histograms (Figures 6-7).
- `masking_curve.png`: dev metric of the stage-1 prompt (no retraining) against the share of
  tokens masked in importance, reversed and random order (Figure 2 generalised).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..fileio import is_writer, save_figure
from ..markdown import cell
from ..runs import report as run_report
from . import pruning
from .scoring import ImportanceScores

logger = logging.getLogger("xprompt_jax")


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
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_histogram(values: np.ndarray, title: str, path: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(np.asarray(values, np.float64).ravel(), bins=30, color="#4C72B0")
    ax.set_title(title)
    ax.set_xlabel("importance score")
    ax.set_ylabel("count")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_masking_curve(curve: Mapping[str, Any], path: str) -> None:
    """Dev metric against pruned token share, one line per order (random: mean of seeds)."""
    plt = _plt()
    shares = [100 * r for r in curve["ratios"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    styles = {"importance": ("tab:green", "o-", "importance order (XPrompt)"),
              "reversed": ("tab:red", "s-", "reversed importance"),
              "random": ("tab:gray", "^--", f"random (mean of {len(curve['random_seeds'])})")}
    for order, (color, style, label) in styles.items():
        values = [np.nan if v is None else v for v in curve[order]]
        ax.plot(shares, values, style, color=color, label=label)
    ax.set_xlabel("prompt tokens masked (%)")
    ax.set_ylabel(f"dev {curve.get('metric', 'main metric')}")
    ax.set_title("masking curve: stage-1 prompt, no retraining")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def curve_lines(curve: Mapping[str, Any]) -> list:
    """Markdown table of the masking curve (also printed by the quickstart)."""
    lines = ["| tokens masked | importance order | reversed order | random (mean) |",
             "|---|---|---|---|"]
    for i, ratio in enumerate(curve["ratios"]):
        lines.append(f"| {ratio:.0%} ({curve['pruned_tokens'][i]}) | "
                     f"{_num(curve['importance'][i])} | {_num(curve['reversed'][i])} | "
                     f"{_num(curve['random'][i])} |")
    return lines


def protocol_lines(report: Mapping[str, Any]) -> list:
    """The protocol in words, comparable with the paper's section 5.3."""
    proto = report.get("protocol")
    if not proto:
        return []
    pct = lambda ratios: ", ".join(f"{r:.0%}" for r in ratios) or "-"  # noqa: E731
    searched = []
    if proto["token_ratios"]:
        searched.append(f"token ratios {{{pct(proto['token_ratios'])}}}")
    if proto["piece_ratios"]:
        searched.append(f"then piece ratios {{{pct(proto['piece_ratios'])}}} "
                        f"({proto['piece_ranking'].replace('_', ' ')} ranking) on the best "
                        "token mask")
    return [
        "## Protocol", "",
        f"- searched: {'; '.join(searched)}; iterative (scores recomputed on the survivors "
        "after each ratio); the unpruned prompt "
        f"{'was' if proto['unpruned_candidate'] else 'was not'} a candidate;",
        f"- candidates scored: {proto['candidates_scored']}, on the "
        f"`{proto['eval_split']}` split by {proto['eval_mode'].replace('_', ' ')}; metric: "
        f"{proto['main_metric']}; ties go to the sparser mask;",
        f"- chosen: `{proto['chosen']}`; pruned tokens: "
        f"{'removed from attention' if proto['token_prune_mode'] == 'remove' else 'gamma * P (zero vectors, still attended; the paper eq. 2)'};",
        f"- mask variant: `{proto['mask_variant']}`; survivors rewound to the stage-1 prompt "
        f"({_step_label(proto['rewound_to_stage1_step'])}), fresh optimizer, same recipe, "
        "masks fixed, " + (f"{proto['rewind_steps']} steps; best rewound checkpoint by the "
                           "same dev metric." if proto['rewind_steps'] is not None else
                           "retrained by the next run (not here)."),
        *_scoring_cost_lines(proto), ""]


def _scoring_cost_lines(proto: Mapping[str, Any]) -> list:
    cost = proto.get("importance_scoring")
    if not cost:
        return []
    return [f"- importance scoring: {cost['scorings']} scorings (the full prompt, the "
            f"survivors after each ratio step, the best token mask before the piece level) x "
            f"{cost['examples_each']} training examples = "
            f"{cost['examples_total']} forward + backward passes, about "
            f"{cost['train_step_equivalents']:g} train steps;"]


def _num(value) -> str:
    return cell(value, ".4g")


def _step_label(step) -> str:
    return f"step {step}" if isinstance(step, int) or str(step).isdigit() else str(step)


def markdown(report: Mapping[str, Any], title: str = "XPrompt report") -> list:
    """report.md lines of the pipeline (or the T5X stage 2, which has no rewind yet)."""
    params = report["parameters"]
    final = report["final_eval"]
    stage1 = report["stage1"].get("eval") or {}
    if final:
        xprompt_row = (f"| XPrompt (rewound, step {final.get('checkpoint_step')}) | "
                       f"{_num(final.get('main_metric'))} | {params['xprompt']} |")
    else:
        xprompt_row = (f"| XPrompt masks (before rewinding; rewind with t5x/train.py) | - | "
                       f"{params['xprompt']} |")
    lines = [
        f"# {title}", "",
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
        f"| prompt tuning (stage 1, {_step_label(report['stage1']['best_step'])}) | "
        f"{_num(stage1.get('main_metric'))} | {params['prompt_tuning']} |",
        xprompt_row, "",
        f"Surviving tokens: {params['surviving_tokens']} / {report['prompt_length']}; surviving "
        f"pieces: {params['surviving_pieces']} / {report['prompt_length'] * report['num_pieces']}"
        f" (parameters = surviving pieces x e/k).", "",
    ]
    ablations = report.get("ablations") or {}
    if ablations:
        lines += ["## Ablations (same stage 1, same counts; the paper's Figure 5)", "",
                  "| variant | dev main metric | surviving tokens | surviving pieces |",
                  "|---|---|---|---|",
                  f"| XPrompt | {_num(final.get('main_metric'))} | "
                  f"{params['surviving_tokens']} | {params['surviving_pieces']} |"]
        for name, row in ablations.items():
            lines.append(f"| {name} | {_num((row.get('final_eval') or {}).get('main_metric'))}"
                         f" | {row['surviving_tokens']} | {row['surviving_pieces']} |")
        lines.append("")
    lines += protocol_lines(report)
    curve = report.get("masking_curve")
    if curve:
        lines += ["## Masking curve (stage-1 prompt, no retraining; the paper's Figure 2)", "",
                  *curve_lines(curve), "", "![masking curve](masking_curve.png)", ""]
    search = report["search"]
    for level in ("token", "piece"):
        rows = search.get(f"{level}_candidates") or []
        if not rows:
            continue
        lines += [f"## {level.capitalize()}-level candidates (stage-1 prompt, no retraining)", "",
                  "| ratio | kept pieces | dev main metric | chosen |", "|---|---|---|---|"]
        for row in rows:
            chosen = "yes" if row["name"] == search.get(f"best_{level}") else ""
            lines.append(f"| {row['ratio']:.0%} | {row.get('kept_pieces', '-')} | "
                         f"{_num(row['main_metric'])} | {chosen} |")
        lines.append("")
    if report.get("nearest_tokens"):
        from ..analysis.nearest_tokens import markdown_lines

        lines += markdown_lines(report["nearest_tokens"])
    timings = report.get("timings_s")
    if timings:
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        lines += ["## Wall time", "", f"{timings['total']:.0f} s in this invocation: {stages} "
                  "(a stage resumed from its files shows the time to load them).", ""]
    lines += ["## Plots", "", "![importance](importance_heatmap.png)", "",
              "![token scores](token_scores_hist.png) ![piece scores](piece_scores_hist.png)", ""]
    return lines


def write_report(model_dir: str, report: Dict[str, Any], scores: ImportanceScores,
                 token_mask: np.ndarray, piece_mask: np.ndarray,
                 sections: Sequence[run_report.SectionFn] = ()) -> Dict[str, Any]:
    """Plots, report.json and report.md; `sections` (functions of the report) add parts
    above or below it (the body's title becomes "Pipeline details" under a summary).
    Returns report.json's content."""
    report = dict(report)
    report["scores"] = scores.to_json()
    report["plots"] = ["importance_heatmap.png", "token_scores_hist.png", "piece_scores_hist.png"]
    if report.get("masking_curve"):
        report["plots"].append("masking_curve.png")
    if is_writer():
        plot_importance_heatmap(scores.piece, token_mask, piece_mask,
                                os.path.join(model_dir, "importance_heatmap.png"))
        plot_histogram(scores.token, "token importance (full prompt)",
                       os.path.join(model_dir, "token_scores_hist.png"))
        plot_histogram(scores.piece, "piece importance (full prompt)",
                       os.path.join(model_dir, "piece_scores_hist.png"))
        if report.get("masking_curve"):
            plot_masking_curve(report["masking_curve"],
                               os.path.join(model_dir, "masking_curve.png"))
    added = [section(report) for section in sections]
    title = "Pipeline details" if any(s.first for s in added) else "XPrompt report"
    return run_report.write_report(model_dir, report, markdown(report, title), added)


def parameters(token_mask, piece_mask, length: int, embed_dim: int) -> Dict[str, int]:
    """Trainable parameters of prompt tuning and of XPrompt's masks (Table 3: surviving
    pieces x e/k), and the surviving counts."""
    return {"prompt_tuning": length * embed_dim,
            "xprompt": pruning.trainable_parameter_count(token_mask, piece_mask, embed_dim),
            "surviving_tokens": int((np.asarray(token_mask) > 0).sum()),
            "surviving_pieces": int(pruning.effective_piece_mask(token_mask, piece_mask).sum())}


def nearest_tokens(ctx, stage1_params) -> Optional[Dict[str, Any]]:
    """Nearest vocabulary pieces of the stage-1 prompt (Lester et al. section 7); None when
    they cannot be computed (a report extra)."""
    try:
        return run_report.prompt_interpretability(ctx.model, ctx.variables(stage1_params),
                                                  ctx.run.task_name)
    except Exception as e:  # pylint: disable=broad-except
        logger.warning("nearest-token analysis skipped: %s", e)
        return None


def protocol(ctx, config, search_result, stage1_step, rewind_steps_run,
             rewind_each_candidate: bool, metric: str, num_score_examples: int = 0
             ) -> Dict[str, Any]:
    """What was searched, retrained and measured, for comparison with the paper (p5).

    `importance_scoring`: the full prompt's scoring, one rescoring of the survivors per
    ratio step of each level (the last ratio of a level needs none) and, before the piece
    level, one scoring on the best token mask, each over `num_score_examples` examples; a
    scored example costs about one trained example (a forward and a backward pass to the
    masks), so `train_step_equivalents` = examples / BATCH_SIZE."""
    levels = config.prune_levels
    steps = {"token": len(config.token_ratios) - 1, "piece": len(config.piece_ratios)}
    scorings = 1 + sum(steps[level] for level in levels)
    examples = scorings * int(num_score_examples)
    return {
        "importance_scoring": {
            "scorings": scorings, "examples_each": int(num_score_examples),
            "examples_total": examples,
            "train_step_equivalents": round(examples / ctx.run.data.batch_size, 1)},
        "levels": list(levels),
        "token_ratios": list(config.token_ratios) if "token" in levels else [],
        "piece_ratios": list(config.piece_ratios) if "piece" in levels else [],
        "piece_ranking": config.piece_ranking,
        "unpruned_candidate": bool(config.search_include_unpruned),
        "iterative": True,
        "candidates_scored": ("each retrained from the stage-1 values (rewind) and its best "
                              "dev checkpoint" if rewind_each_candidate else
                              "stage-1 prompt with the mask applied, no retraining"),
        "eval_split": ctx.evaluator.config.split,
        "eval_mode": ctx.evaluator.config.mode,
        "main_metric": metric,
        "token_prune_mode": getattr(ctx.prompt, "token_prune_mode", None),
        "chosen": search_result.get("xprompt", {}).get("name"),
        "mask_variant": config.mask_variant,
        "rewound_to_stage1_step": stage1_step,
        "rewind_steps": rewind_steps_run,
    }
