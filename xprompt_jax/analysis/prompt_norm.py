"""EPT's mu_t (Eq. 4: mean L2 norm of the prompt tokens) at every step, and its plot
(EPT Figure 2: (a) mu_t per step, (b) the dev metric every evaluation).

`PromptNormRecorder` is a trainer `step_callback`: it keeps `prompt_mean_norm` (computed
inside the jitted step, `train_step.prompt_metrics`) of every step; `write(model_dir)`
appends them to `prompt_mean_norm.jsonl` (so resumed runs continue the series) and
`plot_prompt_norm(model_dir)` draws `prompt_mean_norm.png` from it and the run's eval
log.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..fileio import open_append
from ..training.run_logging import read_metrics

NORM_JSONL = "prompt_mean_norm.jsonl"
NORM_PNG = "prompt_mean_norm.png"


class PromptNormRecorder:
    """`step_callback(step, metrics)` keeping `prompt_mean_norm` of every step."""

    def __init__(self):
        self.steps: List[int] = []
        self.values: List[float] = []

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
        if "prompt_mean_norm" in metrics:
            self.steps.append(int(step))
            self.values.append(float(np.asarray(metrics["prompt_mean_norm"])))

    def write(self, model_dir: str) -> str:
        path = os.path.join(model_dir, NORM_JSONL)
        with open_append(path) as f:
            for s, v in zip(self.steps, self.values):
                f.write(json.dumps({"step": s, "prompt_mean_norm": v}) + "\n")
        self.steps, self.values = [], []
        return path


def read_norms(model_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """(steps, mu_t) from prompt_mean_norm.jsonl; a later record of a step wins."""
    by_step: Dict[int, float] = {}
    for rec in read_metrics(os.path.join(model_dir, NORM_JSONL)):  # a torn line skipped
        by_step[int(rec["step"])] = float(rec["prompt_mean_norm"])
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def read_evals(model_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """(steps, main metric) of the evaluations in the run's JSONL log, if any."""
    points: Dict[int, float] = {}
    for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
        if not name.endswith(".jsonl") or name == NORM_JSONL:
            continue
        with open(os.path.join(model_dir, name)) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("split") == "eval" and rec.get("main_metric") is not None:
                    points[int(rec["step"])] = float(rec["main_metric"])
    steps = np.array(sorted(points), dtype=np.int64)
    return steps, np.array([points[s] for s in steps], dtype=np.float64)


def plot_prompt_norm(model_dir: str, title: Optional[str] = None) -> Optional[str]:
    """Writes prompt_mean_norm.png (Agg canvas, no display); None without records."""
    steps, norms = read_norms(model_dir)
    if not len(steps):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    eval_steps, evals = read_evals(model_dir)
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(steps, norms, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("mean prompt-token L2 norm (mu_t)")
    ax.set_title("(a) mu_t, every step")
    bx = fig.add_subplot(1, 2, 2)
    if len(eval_steps):
        bx.plot(eval_steps, evals, marker="o")
    bx.set_xlabel("step")
    bx.set_ylabel("dev main metric")
    bx.set_title("(b) evaluation")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(model_dir, NORM_PNG)
    fig.savefig(path, dpi=100)
    return path
