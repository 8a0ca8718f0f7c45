"""The report of a sweep run (SWEEP, training/sweep.py): one row per configuration and,
where seeds vary, each other configuration's spread over its seeds.

`write_sweep_report(model_dir)` reads MODEL_DIR/best_per_entry.json (the per-entry record
`sweep.SweepEntries` keeps during training) and writes, in MODEL_DIR:

- `sweep_report.json`: `rows` (per entry: its configuration, best dev metric and step,
  the held-out split's main metric at that step (EVAL_HELDOUT_SPLIT), final metric and
  step - the last evaluation while it trained -, stop step) and `groups` (per
  configuration without its seed: the seeds, and `best` / `final` / `heldout` as `n`, `mean`,
  `std` (ddof 1), `ci95` (the two-sided 95% Student-t interval over the seeds,
  `analysis.seed_stats`));
- `sweep_report.md`: the same as two tables;
- `sweep_report.png`: each entry's best metric by configuration, the seeds' mean with
  its 95% interval where seeds vary.

The training CLI writes it at the end of a sweep run; a finished (or partly finished)
run's report can be rewritten with the same call.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping

from ..analysis.seed_stats import summarize
from ..errors import ConfigError
from ..fileio import (is_file, is_writer, read_json, save_figure, write_json_atomic,
                      write_text_atomic)
from ..markdown import cell
from ..training.sweep import BEST_FILE, SEED_KEY

REPORT_JSON, REPORT_MD, REPORT_PNG = "sweep_report.json", "sweep_report.md", "sweep_report.png"


def _label(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "(all)"


def sweep_report(record: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """The report (module docstring) of a best_per_entry.json record."""
    rows: List[Dict[str, Any]] = []
    order = sorted(record, key=lambda n: (record[n].get("index", len(record)), n))
    for name, entry in ((n, record[n]) for n in order):  # the sweep's order
        held = entry.get("best_heldout") or {}
        rows.append({"entry": name, "config": dict(entry.get("config") or {}),
                     **{k: entry.get(k) for k in ("best_metric", "best_step", "last_metric",
                                                  "last_step", "stopped_at")},
                     "heldout_split": held.get("split"),
                     "heldout_metric": held.get("main_metric")})
    groups: List[Dict[str, Any]] = []
    if any(SEED_KEY in row["config"] for row in rows):
        by_config: Dict[str, List[Dict[str, Any]]] = {}
        for row in rows:
            rest = {k: v for k, v in row["config"].items() if k != SEED_KEY}
            by_config.setdefault(_label(rest), []).append(row)
        for label, members in by_config.items():
            groups.append({
                "config": label, "seeds": [m["config"].get(SEED_KEY) for m in members],
                "best": summarize([m["best_metric"] for m in members]),
                "final": summarize([m["last_metric"] for m in members]),
                "heldout": summarize([m["heldout_metric"] for m in members])})
    return {"rows": rows, "groups": groups}


def sweep_markdown(report: Mapping[str, Any], title: str = "Sweep") -> str:
    split = next((r["heldout_split"] for r in report["rows"] if r["heldout_split"]), None)
    held = [] if split is None else [f"{split} at the best step"]
    lines = [f"# {title}", "", "| configuration | best dev metric | at step | "
             + "".join(f"{h} | " for h in held) + "final metric | at step | stopped at |",
             "|---|---|---|" + "---|" * len(held) + "---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['entry']} | {cell(row['best_metric'])} | "
                     f"{cell(row['best_step'])} | "
                     + "".join(f"{cell(row['heldout_metric'])} | " for _ in held)
                     + f"{cell(row['last_metric'])} | {cell(row['last_step'])} | "
                     f"{cell(row['stopped_at'])} |")
    if report["groups"]:
        keys = ["best", "final"] + (["heldout"] if held else [])
        lines += ["", "Over seeds (mean, sample std, two-sided 95% t-interval):", "",
                  "| configuration | seeds | "
                  + " | ".join(f"{k}: mean | std | 95% interval" for k in keys) + " |",
                  "|---|---|" + "---|---|---|" * len(keys)]
        for group in report["groups"]:
            parts = []
            for key in keys:
                stats = group[key]
                ci = stats["ci95"]
                parts += [cell(stats["mean"]), cell(stats["std"]),
                          "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"]
            lines.append(f"| {group['config']} | {', '.join(map(str, group['seeds']))} | "
                         + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(report: Mapping[str, Any], path: str, title: str = "Sweep") -> None:
    """Each entry's best dev metric (dots) by configuration without its seed; where seeds
    vary, their mean and 95% interval (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = list(dict.fromkeys(
        _label({k: v for k, v in r["config"].items() if k != SEED_KEY}) for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2), 3.5))
    for row in rows:
        x = labels.index(_label({k: v for k, v in row["config"].items() if k != SEED_KEY}))
        if row["best_metric"] is not None:
            ax.plot([x], [row["best_metric"]], "o", color="tab:blue", alpha=0.6)
    for group in report["groups"]:
        stats = group["best"]
        if stats["mean"] is None:
            continue
        x = labels.index(group["config"])
        lo, hi = stats["ci95"] or (stats["mean"], stats["mean"])
        ax.errorbar([x + 0.15], [stats["mean"]], yerr=[[stats["mean"] - lo],
                                                       [hi - stats["mean"]]],
                    fmt="s", color="tab:red", capsize=4)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("best dev metric")
    ax.set_title(title + (" (red: mean, 95% t-interval over seeds)" if report["groups"]
                          else ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_sweep_report(model_dir: str, title: str = "Sweep") -> Dict[str, Any]:
    """sweep_report.json / .md / .png of the sweep run in `model_dir` (module docstring);
    returns the report. ConfigError when the run kept no per-entry record (not a sweep,
    or no evaluation yet)."""
    path = os.path.join(model_dir, BEST_FILE)
    if not is_file(path):
        raise ConfigError(f"{path} does not exist: not a sweep run (SWEEP) or no evaluation "
                          "yet (EVAL_PERIOD)")
    report = sweep_report(read_json(path, "sweep per-entry record"))
    if is_writer():
        write_json_atomic(os.path.join(model_dir, REPORT_JSON), report)
        write_text_atomic(os.path.join(model_dir, REPORT_MD), sweep_markdown(report, title))
        plot_sweep(report, os.path.join(model_dir, REPORT_PNG), title)
    return report
