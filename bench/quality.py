#!/usr/bin/env python
"""Quality benchmark on the synthetic world: held-out test accuracy of every prompt method,
over seeds, with 95% intervals and the papers' claims answered from paired differences.

    python bench/quality.py                     # the docs' table (regime fewshot16)
    python bench/quality.py --quick             # 1 seed, world_rte: a smoke run
    python bench/quality.py --regime full300    # the saturated regime, for comparison

Data (`xprompt_jax/world/bench_tasks.py`, `gin/world/bench.gin`): every world task is
re-split as EPT App. B.1's `from_train` - dev = 200 training examples (checkpoint and
XPrompt mask selection), train = the other 1800, test = the world's labelled 400-example
validation file (reported only). A regime (`REGIMES`) fixes the train set (`k`-shot,
drawn with the run's seed: `world_<task>_heldout_<k>shot_seed<s>`, or all 1800), the step
budget per training stage and the evaluation period; every trained method gets the same.

Rows (`METHODS`): the frozen model with the task name (upper reference) and with neither
name nor prompt (lower reference), evaluated on dev and test, no training; prompt tuning;
XPrompt (one pipeline run per seed, whose stage 1 is a prompt-tuning row of its own and
whose `ABLATIONS` give the reversed / random / length mask rows from the same stage 1 and
search: the paper's Figure 5 paired by construction); our XPrompt variants ('remove'
tokens, global piece ranking: separate pipeline runs that reuse the main run's stage 1,
identical by construction); EPT, EPT*, P-Tuning (MLP, LSTM), ResPrompt. Methods of tier
'extra' run on the first `--extra_seeds` seeds only (said in the table and JSON).

Every run is a subprocess of the method's CLI (`models/world_tiny.gin` -> method file ->
`world/run.gin` -> `world/bench.gin`) in `<output_dir>/<regime>/<task>/<method>/seed<k>/`
(log in `log.txt`); a finished run is read back instead of rerun. `--jobs` runs that many
at once.

Writes `<output_dir>/quality.json` (`results`: one row per task x method with per-seed
dev / test values, mean, std, 95% t-interval, trainable parameters, wall time; `claims`:
each of the papers' claims with its paired difference, interval and answer yes / no / not
separable, see `quality_stats.py`), `quality.png` (test accuracy with intervals, methods x
tasks) and prints the markdown tables; `--results_dir DIR` copies JSON and PNG there
(`bench/results/` holds the one docs/benchmarks.md shows).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The page whose quality-table markers `--write_readme` rewrites.
DOCS_PAGE = os.path.join(REPO_ROOT, "docs", "benchmarks.md")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
for _p in (REPO_ROOT, BENCH_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import quality_claims  # noqa: E402  (bench/)
import quality_stats as qs  # noqa: E402  (bench/)
import readme_block  # noqa: E402  (bench/)

from xprompt_jax import compile_cache, gin_utils  # noqa: E402
from xprompt_jax.fileio import runs_dir  # noqa: E402
from xprompt_jax.world import quickstart  # noqa: E402

BENCH_GIN = "world/bench.gin"


@dataclasses.dataclass(frozen=True)
class Regime:
    """Train set and budget shared by every trained method of a benchmark run."""

    name: str
    k: int                  # k-shot train set drawn with the run's seed; 0: all 1800
    steps: int              # TRAIN_STEPS of every training stage
    eval_period: int        # EVAL_PERIOD (dev; test scored at each new best)
    note: str = ""

    def describe(self) -> str:
        data = (f"{self.k}-shot train set drawn with the seed" if self.k else
                "all 1800 training examples")
        return (f"{data}, {self.steps} steps of batch 32 per training stage, dev evaluated "
                f"every {self.eval_period} steps")


REGIMES: Dict[str, Regime] = {
    "fewshot16": Regime("fewshot16", 16, 30, 10,
                        "16-shot train set drawn with the seed, 30 steps of batch 32 per "
                        "stage, dev (200) every 10 steps"),
    "fewshot32": Regime("fewshot32", 32, 30, 10, "32-shot, otherwise as fewshot16"),
    "full300": Regime("full300", 0, 300, 100,
                      "all 1800 training examples, 300 steps (the saturated regime)"),
}
DEFAULT_REGIME = "fewshot16"
DEFAULT_TASKS = ("rte", "boolq")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_EXTRA_SEEDS = 3


@dataclasses.dataclass(frozen=True)
class BenchMethod:
    """One row: a reference, a train-CLI run, or a part of an XPrompt pipeline run.

    `run` names the run directory the row reads (rows of one pipeline share it), `part`
    which result of that run: 'best' (train_summary best_eval), 'final' (pipeline final
    eval), 'stage1' (pipeline stage-1 best), 'ablation:<variant>'."""

    name: str
    kind: str                                  # 'reference' | 'train' | 'xprompt'
    gin_file: Optional[str] = None
    entry: Optional[str] = None
    bindings: Tuple[str, ...] = ()
    requires: Tuple[str, ...] = ()
    reference: Optional[str] = None            # 'prefixed' | 'bare'
    run: Optional[str] = None                  # run directory name (default: slug)
    part: str = "best"
    tier: str = "main"                         # 'main': every seed; 'extra': fewer
    reuse_from: Optional[str] = None           # pipeline: copy these stages from that run
    reuse_stages: Tuple[str, ...] = ()
    steps_factor: int = 1                      # TRAIN_STEPS = factor x the regime's

    @property
    def slug(self) -> str:
        """Directory name: 'EPT*' -> 'ept_star' (distinct from 'EPT' -> 'ept')."""
        name = self.name.lower().replace("*", " star")
        return "".join(c if c.isalnum() else "_" for c in name).strip("_")

    @property
    def run_name(self) -> str:
        return self.run or self.slug


TRAIN = "xprompt_jax.train"
XPROMPT = "xprompt_jax.xprompt"
_XP_REQ = ("xprompt_jax.xprompt.pipeline",)
# The main pipeline: ablations from the same stage 1 and search; 64 score examples (a
# k-shot train set repeats anyway); the masking curve at 0, 50, 70, 90% (Figure 2's claim).
# The search at 5 of the paper's 9 ratios per level (cost).
_XP_SEARCH = ("NUM_SCORE_EXAMPLES = 64", "TOKEN_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)",
              "PIECE_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)")
_XP_MAIN = _XP_SEARCH + ("ABLATIONS = ('reversed', 'random', 'length')",
                         "CURVE_RATIOS = (0.0, 0.5, 0.7, 0.9)")
_XP_VARIANT = _XP_SEARCH + ("MASKING_CURVE = False",)
PT_NAME, XP_NAME = "prompt tuning", "XPrompt"
METHODS: Tuple[BenchMethod, ...] = (
    BenchMethod("task prefix (upper reference)", "reference", reference="prefixed"),
    BenchMethod("no prompt (lower reference)", "reference", reference="bare"),
    BenchMethod(PT_NAME, "train", "prompt_tuning.gin", TRAIN),
    BenchMethod(XP_NAME, "xprompt", "xprompt.gin", XPROMPT, _XP_MAIN, _XP_REQ,
                run="xprompt", part="final", tier="extra"),
    BenchMethod("XPrompt stage 1 (prompt tuning, masked prompt)", "xprompt", "xprompt.gin",
                XPROMPT, _XP_MAIN, _XP_REQ, run="xprompt", part="stage1", tier="extra"),
    BenchMethod("XPrompt, reversed masks", "xprompt", "xprompt.gin", XPROMPT, _XP_MAIN,
                _XP_REQ, run="xprompt", part="ablation:reversed", tier="extra"),
    BenchMethod("XPrompt, random masks", "xprompt", "xprompt.gin", XPROMPT, _XP_MAIN,
                _XP_REQ, run="xprompt", part="ablation:random", tier="extra"),
    BenchMethod("XPrompt, length masks", "xprompt", "xprompt.gin", XPROMPT, _XP_MAIN,
                _XP_REQ, run="xprompt", part="ablation:length", tier="extra"),
    BenchMethod("XPrompt, 'remove' tokens (ours)", "xprompt", "xprompt.gin", XPROMPT,
                _XP_VARIANT + ("TOKEN_PRUNE_MODE = 'remove'",), _XP_REQ, part="final",
                tier="extra", reuse_from="xprompt", reuse_stages=("stage1",)),
    BenchMethod("XPrompt, global piece ranking (ours)", "xprompt", "xprompt.gin", XPROMPT,
                _XP_VARIANT + ("PIECE_RANKING = 'global'",), _XP_REQ, part="final",
                tier="extra", reuse_from="xprompt", reuse_stages=("stage1", "scores")),
    # world/run.gin (included after the method file) sets PROMPT_LENGTH 20; EPT's own
    # length (1) and EPT*'s (10) are restored by bindings, which come after every file.
    BenchMethod("EPT", "train", "ept.gin", TRAIN, ("PROMPT_LENGTH = 1",),
                ("xprompt_jax.prompts.ept",), tier="extra"),
    BenchMethod("EPT*", "train", "ept_star.gin", TRAIN, ("PROMPT_LENGTH = 10",),
                ("xprompt_jax.prompts.ept",), tier="extra"),
    BenchMethod("P-Tuning (MLP)", "train", "p_tuning_mlp.gin", TRAIN,
                requires=("xprompt_jax.prompts.ptuning",), tier="extra"),
    BenchMethod("P-Tuning (LSTM)", "train", "p_tuning_lstm.gin", TRAIN,
                requires=("xprompt_jax.prompts.ptuning",), tier="extra"),
    BenchMethod("ResPrompt", "train", "resprompt.gin", TRAIN,
                requires=("xprompt_jax.prompts.resprompt",), tier="extra"),
    BenchMethod("prompt tuning, 2x steps", "train", "prompt_tuning.gin", TRAIN,
                tier="extra", steps_factor=2),
)
METHOD_NAMES = tuple(m.name for m in METHODS)
QUICK_METHODS = (METHOD_NAMES[0], METHOD_NAMES[1], PT_NAME, XP_NAME,
                 "XPrompt stage 1 (prompt tuning, masked prompt)", "XPrompt, reversed masks",
                 "XPrompt, random masks", "XPrompt, length masks", "EPT*", "P-Tuning (MLP)",
                 "ResPrompt")


def missing_parts(method: BenchMethod) -> List[str]:
    """What of `method` is not in this checkout (empty: it can run)."""
    missing = []
    for module in ((method.entry,) if method.entry else ()) + method.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"module {module}")
    if method.gin_file:
        try:
            gin_utils._resolve(method.gin_file, gin_utils.default_search_paths())
        except gin_utils.GinConfigError:
            missing.append(f"gin file {method.gin_file}")
    return missing


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _dev_test(result: Optional[Dict[str, Any]]) -> Tuple[Optional[float], Optional[float]]:
    """(dev, test) main metrics of an evaluation result with a 'heldout' entry."""
    result = result or {}
    return result.get("main_metric"), (result.get("heldout") or {}).get("main_metric")


def run_finished(method: BenchMethod, run_dir: str) -> bool:
    name = "report.json" if method.kind == "xprompt" else "train_summary.json"
    return os.path.exists(os.path.join(run_dir, name))


def run_result(method: BenchMethod, run_dir: str) -> Optional[Dict[str, Any]]:
    """`{'dev', 'test', 'parameters', ...}` of `method`'s part of a finished run."""
    if method.kind != "xprompt":
        summary = _read_json(os.path.join(run_dir, "train_summary.json"))
        if not summary:
            return None
        best = summary.get("best_eval") or {}
        dev, test = _dev_test(best)
        return {"dev": dev, "test": test, "best_step": best.get("step"),
                "parameters": summary.get("num_trainable_params")}
    report = _read_json(os.path.join(run_dir, "report.json"))
    if not report:
        return None
    params = report.get("parameters") or {}
    if method.part == "final":
        dev, test = _dev_test(report.get("final_eval"))
        return {"dev": dev, "test": test, "parameters": params.get("xprompt"),
                "surviving_tokens": params.get("surviving_tokens"),
                "surviving_pieces": params.get("surviving_pieces"),
                "chosen": ((report.get("search") or {}).get("xprompt") or {}).get("name"),
                "masking_curve": _curve_summary(report.get("masking_curve"))}
    if method.part == "stage1":
        dev, test = _dev_test((report.get("stage1") or {}).get("eval"))
        return {"dev": dev, "test": test, "parameters": params.get("prompt_tuning"),
                "best_step": (report.get("stage1") or {}).get("best_step")}
    if method.part.startswith("ablation:"):
        row = (report.get("ablations") or {}).get(method.part.split(":", 1)[1])
        if not row:
            return None
        dev, test = _dev_test(row.get("final_eval"))
        return {"dev": dev, "test": test, "parameters": row.get("parameters"),
                "surviving_tokens": row.get("surviving_tokens"),
                "surviving_pieces": row.get("surviving_pieces")}
    raise ValueError(f"unknown part {method.part!r}")


def _curve_summary(curve: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The masking curve's dev series (stage-1 prompt, no retraining) by ratio."""
    if not curve:
        return None
    return {k: curve.get(k) for k in ("ratios", "importance", "reversed", "random")}


def _reuse_stages(src_dir: str, run_dir: str, stages: Sequence[str]) -> List[str]:
    """Copies finished pipeline stages (their directory with DONE.json) from another run of
    the same seed and task (identical by construction: the same stage-1 config and seed)."""
    copied = []
    for stage in stages:
        src = os.path.join(src_dir, stage)
        dst = os.path.join(run_dir, stage)
        if os.path.exists(os.path.join(src, "DONE.json")) and not os.path.exists(dst):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "run.lock"))
            copied.append(stage)
    return copied


def run_env(run_dir: str) -> Dict[str, str]:
    """The runs' environment: JAX's persistent compilation cache shared by every run of
    the benchmark (the CLIs' own, `compile_cache.private_dir()`, not the output directory,
    which others may be able to write, unless $JAX_COMPILATION_CACHE_DIR is set), so the same train / eval step
    compiles once, not once per run; results are unchanged (the same executables)."""
    del run_dir  # the cache no longer lives under the output directory
    env = dict(os.environ)
    if not env.get("JAX_COMPILATION_CACHE_DIR"):
        env["JAX_COMPILATION_CACHE_DIR"] = compile_cache.private_dir()
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return env


def run_one(method: BenchMethod, task_name: str, seed: int, steps: int, eval_period: int,
            run_dir: str, world_dir: str, timeout_s: Optional[float],
            reuse_dir: Optional[str] = None, extra_bindings: Sequence[str] = ()
            ) -> Dict[str, Any]:
    """Runs one (method, task, seed) in a subprocess (or reads its finished run)."""
    if run_finished(method, run_dir):
        return {"status": "ok", "reused": True, **(_read_json(
            os.path.join(run_dir, "bench_run.json")) or {})}
    os.makedirs(run_dir, exist_ok=True)
    copied = _reuse_stages(reuse_dir, run_dir, method.reuse_stages) if reuse_dir else []
    qs_method = quickstart.Method(method.name, method.gin_file)
    extra = [f"--gin_file={BENCH_GIN}", f"--gin.EVAL_PERIOD={int(eval_period)}",
             *method.bindings, *extra_bindings]
    args = quickstart.gin_args(qs_method, run_dir, task_name, world_dir, seed, steps, extra,
                               progress=False)
    # gin_args prefixes 'world_' to the task; the bench task name is already complete.
    args = [f"--gin.MIXTURE_OR_TASK_NAME={task_name!r}"
            if a.startswith("--gin.MIXTURE_OR_TASK_NAME=") else a for a in args]
    cmd = [sys.executable, "-m", method.entry] + args
    start = time.time()
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                timeout=timeout_s, env=run_env(run_dir)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    info = {"wall_time_s": round(time.time() - start, 1), "returncode": rc,
            "reused_stages": copied}
    with open(os.path.join(run_dir, "bench_run.json"), "w") as f:
        json.dump(info, f)
    if rc != 0 or not run_finished(method, run_dir):
        return {"status": "failed", "log": os.path.join(run_dir, "log.txt"), **info}
    return {"status": "ok", **info}


def reference_results(task: str, cache_path: str) -> Dict[str, Dict[str, float]]:
    """`{'prefixed'|'bare': {'dev', 'test'}}`: the frozen model on the benchmark's dev and
    test splits, with and without the task name (no prompt, no training)."""
    cached = _read_json(cache_path)
    if cached:
        return cached
    from xprompt_jax.evaluation import EvalConfig, Evaluator
    from xprompt_jax.world import bench_tasks, reference

    model, params = reference.load_model_and_params()
    out: Dict[str, Dict[str, float]] = {}
    start = time.time()
    for variant in ("prefixed", "bare"):
        name = bench_tasks.heldout_task_name(task, prefixed=variant == "prefixed")
        out[variant] = {}
        for key, split in (("dev", "validation"), ("test", "test")):
            evaluator = Evaluator(model, name, reference.FEATURE_LENGTHS,
                                  EvalConfig(mode="rank_classification", split=split,
                                             batch_size=64))
            out[variant][key] = evaluator.evaluate({"params": params})["main_metric"]
    for v in out.values():
        v["wall_time_s"] = round((time.time() - start) / 2, 1)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    with open(cache_path, "w") as f:
        json.dump(out, f)
    return out


def make_row(task: str, regime: Regime, method: BenchMethod, per_seed: Dict[int, Dict],
             seeds_planned: Sequence[int], status: str = "ok",
             note: str = "") -> Dict[str, Any]:
    """One `results` row: per-seed values and their summaries (see module doc)."""
    ok = {s: r for s, r in per_seed.items() if r.get("status") == "ok"}
    dev = qs.summarize([r.get("dev") for r in ok.values()])
    test = qs.summarize([r.get("test") for r in ok.values()])
    params = sorted({r.get("parameters") for r in ok.values() if r.get("parameters")
                     is not None})
    walls = [r["wall_time_s"] for r in ok.values() if r.get("wall_time_s") is not None]
    if status == "ok" and method.kind != "reference" and test["n"] == 0:
        states = sorted({r.get("status", "not run") for r in per_seed.values()}) or ["not run"]
        status = "/".join(states)
        note = NOT_RUN_NOTE + (f" ({note})" if note else "")
    return {
        "task": task, "regime": regime.name, "method": method.name, "kind": method.kind,
        "tier": method.tier, "status": status, "note": note,
        "gin_file": method.gin_file, "bindings": list(method.bindings),
        "steps": regime.steps * method.steps_factor if method.kind != "reference" else 0,
        "seeds_planned": list(seeds_planned), "n": test["n"],
        "dev_mean": dev["mean"], "dev_std": dev["std"], "dev_ci95": dev["ci95"],
        "test_mean": test["mean"], "test_std": test["std"], "test_ci95": test["ci95"],
        "trainable_parameters": params[0] if len(params) == 1 else (params or None),
        "wall_time_s_per_run": (sum(walls) / len(walls)) if walls else None,
        "per_seed": {str(s): r for s, r in per_seed.items()},
    }


NOT_RUN_NOTE = "no finished run in this benchmark (left out for cost)"


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_results(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["| task | method | seeds | trainable params | dev | test mean +- std | "
             "test 95% CI | test per seed | s / run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['task']} | {r['method']} | - | - | - | - | - | - | "
                         f"{r['status']}: {r['note']} |")
            continue
        ci = "-" if not r["test_ci95"] else f"[{r['test_ci95'][0]:.1f}, {r['test_ci95'][1]:.1f}]"
        std = "" if r["test_std"] is None else f" +- {r['test_std']:.1f}"
        per = " / ".join(_fmt(v.get("test")) for v in r["per_seed"].values())
        if r["kind"] == "reference":
            per = "(no training: seed-invariant)"
        params = r["trainable_parameters"]
        params = ", ".join(map(str, params)) if isinstance(params, list) else _fmt(params, 0)
        seeds = "-" if r["kind"] == "reference" else f"{r['n']}/{len(r['seeds_planned'])}"
        lines.append(f"| {r['task']} | {r['method']} | {seeds} | {params} | "
                     f"{_fmt(r['dev_mean'])} | {_fmt(r['test_mean'])}{std} | {ci} | {per} | "
                     f"{_fmt(r['wall_time_s_per_run'], 0)} |")
    return "\n".join(lines)


README_BEGIN = "<!-- quality-table:begin (bench/quality.py --write_readme writes this block) -->"
README_END = "<!-- quality-table:end -->"


def readme_block(results: Dict[str, Any], png_rel: Optional[str]) -> str:
    """The quality block of docs/benchmarks.md: regime, results and claims tables, the plot
    (`png_rel`: its path relative to the page)."""
    r = results["regime"]
    env = results.get("environment") or {}
    lines = [README_BEGIN,
             f"Regime `{r['name']}`: {r['description']}; tasks {', '.join(results['tasks'])}; seeds "
             f"{', '.join(map(str, results['seeds']))} (rows marked 3/3: the first "
             f"{results['extra_seeds']} only, for cost). Dev = 200 training examples "
             "(selection), test = the world's labelled 400-example validation file "
             "(reported); 95% t-intervals over seeds. Machine: "
             f"{env.get('cpus_available')} CPU cores shared with other jobs (load average "
             f"{', '.join(f'{x:.1f}' for x in env.get('loadavg_end', []))} at the end), "
             f"{results['run_time_s_total'] / 60:.0f} min of run wall time in all "
             f"(runs {results['jobs']} at a time).", "",
             format_results([r for r in results["results"] if r["status"] == "ok"]), ""]
    not_run = [f"{r['method']} ({r['task']})" for r in results["results"] if r["status"] != "ok"]
    if not_run:
        lines += ["Not run (no finished run; left out for cost on the shared CPU): "
                  + "; ".join(not_run) + ".", ""]
    ran = [c for c in results["claims"] if c["n"] > 0]
    lines += [quality_claims.format_claims(ran), ""]
    unanswered = [f"{c['claim']} ({c['task']})" for c in results["claims"] if c["n"] == 0]
    if unanswered:
        lines += ["Claims without runs (answered **not separable**): " + "; ".join(unanswered)
                  + ".", ""]
    by_answer: Dict[str, List[str]] = {}
    for c in ran:
        by_answer.setdefault(c["answer"], []).append(f"{c['claim']} ({c['task']})")
    for ans in qs.ANSWERS:
        if by_answer.get(ans):
            lines.append(f"- **{ans}** ({len(by_answer[ans])} of the claims with runs): "
                         + "; ".join(by_answer[ans]))
    lines.append("")
    if png_rel:
        lines += [f"![quality benchmark: test accuracy with 95% intervals]({png_rel})", ""]
    lines.append(README_END)
    return "\n".join(lines)


def write_readme_block(text: str, path: str) -> None:
    readme_block.replace_block(path, README_BEGIN, README_END, text)


def plot(rows: Sequence[Dict[str, Any]], path: str, title: str) -> Optional[str]:
    """Test accuracy (mean, 95% CI) of every trained row, one panel per task; references
    as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    trained = [m for m in dict.fromkeys(r["method"] for r in rows if r["kind"] != "reference")]
    if not tasks or not trained:
        return None
    fig, axes = plt.subplots(1, len(tasks), squeeze=False, sharey=True,
                             figsize=(2.2 + 3.4 * len(tasks), 0.34 * len(trained) + 1.8))
    for ax, task in zip(axes[0], tasks):
        by = {r["method"]: r for r in rows if r["task"] == task}
        for i, name in enumerate(trained):
            r = by.get(name)
            if not r or r["test_mean"] is None:
                continue
            lo, hi = r["test_ci95"] or (r["test_mean"], r["test_mean"])
            color = "tab:green" if name.startswith("XPrompt") else "tab:blue"
            ax.errorbar(r["test_mean"], i, xerr=[[r["test_mean"] - lo], [hi - r["test_mean"]]],
                        fmt="o", color=color, capsize=3)
            for v in r["per_seed"].values():
                if v.get("test") is not None:
                    ax.plot(v["test"], i, ".", color="gray", alpha=0.5, markersize=4)
        for ref, style, label in (("no prompt (lower reference)", ":", "no prompt"),
                                  ("task prefix (upper reference)", "--", "task name")):
            if ref in by and by[ref]["test_mean"] is not None:
                ax.axvline(by[ref]["test_mean"], color="tab:red" if "no" in label else "gray",
                           linestyle=style, label=f"frozen, {label}")
        ax.set_title(f"world_{task}")
        ax.set_xlabel("test accuracy (%)")
        ax.set_yticks(range(len(trained)))
        ax.set_yticklabels(trained, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(min(30.0, ax.get_xlim()[0]), 101)
        ax.legend(fontsize=6, loc="lower left")
    import textwrap

    width = int(fig.get_figwidth() * 14)
    fig.suptitle("\n".join(textwrap.fill(part, width) for part in title.split("\n")),
                 fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plan(methods: Sequence[BenchMethod], seeds: Sequence[int], extra_seeds: int
          ) -> Dict[str, List[int]]:
    return {m.name: list(seeds) if m.tier == "main" else list(seeds)[:extra_seeds]
            for m in methods}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", default=DEFAULT_REGIME, choices=sorted(REGIMES))
    parser.add_argument("--tasks", nargs="+", default=None, choices=quickstart.TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--extra_seeds", type=int, default=DEFAULT_EXTRA_SEEDS,
                        help="seeds (the first N) of the methods of tier 'extra'")
    parser.add_argument("--steps", type=int, default=None,
                        help="override the regime's TRAIN_STEPS per stage (smoke tests)")
    parser.add_argument("--eval_period", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=None,
                        help="run only these rows (names as in the table; default all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0, world_rte, the main rows (< 10 min)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--ablations", nargs="*", default=None,
                        choices=("reversed", "random", "length"),
                        help="mask ablations of the XPrompt run (default all three)")
    parser.add_argument("--collect_only", action="store_true",
                        help="launch nothing: tabulate the finished runs of --output_dir "
                             "(the others are 'not run')")
    parser.add_argument("--output_dir", default=None,
                        help="default $XPROMPT_RUNS_DIR/bench-quality-<timestamp> "
                             "($XPROMPT_RUNS_DIR defaults to ~/xprompt_runs)")
    parser.add_argument("--results_dir", default=None,
                        help="also copy quality.json and quality.png here")
    parser.add_argument("--world_dir", default=None)
    parser.add_argument("--timeout_s", type=float, default=None, help="per run")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    parser.add_argument("--write_readme", action="store_true",
                        help="write the tables (and the plot of --results_dir) between the "
                             "quality-table markers of docs/benchmarks.md")
    args = parser.parse_args(argv)

    from xprompt_jax.world import bench_tasks, writer

    regime = REGIMES[args.regime]
    if args.steps or args.eval_period:
        regime = dataclasses.replace(regime, steps=args.steps or regime.steps,
                                     eval_period=args.eval_period or args.steps or
                                     regime.eval_period, name=regime.name + "-custom")
    tasks = args.tasks or (["rte"] if args.quick else list(DEFAULT_TASKS))
    seeds = args.seeds or ([0] if args.quick else list(DEFAULT_SEEDS))
    wanted = args.methods if args.methods is not None else (
        QUICK_METHODS if args.quick else METHOD_NAMES)
    unknown = [m for m in wanted if m not in METHOD_NAMES]
    if unknown:
        parser.error(f"unknown methods {unknown}; expected names from {METHOD_NAMES}")
    methods = [m for m in METHODS if m.name in wanted]
    plan = _plan(methods, seeds, args.extra_seeds)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output_dir = os.path.abspath(args.output_dir or
                                 os.path.join(runs_dir(), f"bench-quality-{stamp}"))
    os.makedirs(output_dir, exist_ok=True)
    world_dir = writer.ensure_world_data(args.world_dir)
    print(f"output directory: {output_dir}\nworld data: {world_dir}\nregime: {regime.name}: "
          f"{regime.describe()}",
          flush=True)
    start = time.time()

    # ---- the runs: one job per (task, run directory, seed); rows of a pipeline share it
    def run_dir(task, method, seed):
        return os.path.join(output_dir, regime.name, task, method.run_name, f"seed{seed}")

    def task_for(task, seed):
        return bench_tasks.bench_task_name(task, regime.k, seed)

    jobs: Dict[Tuple[str, str, int], BenchMethod] = {}
    missing: Dict[str, List[str]] = {}
    for m in methods:
        missing[m.name] = missing_parts(m) if m.kind != "reference" else []
    # seed-major order: a benchmark stopped early still has whole seeds of every row
    for seed in seeds:
        for task in tasks:
            for m in methods:
                if m.kind != "reference" and not missing[m.name] and seed in plan[m.name]:
                    jobs.setdefault((task, m.run_name, seed), m)
    main_jobs = {k: m for k, m in jobs.items() if not m.reuse_from}
    later_jobs = {k: m for k, m in jobs.items() if m.reuse_from}
    outcomes: Dict[Tuple[str, str, int], Dict[str, Any]] = {}

    def launch(key, m):
        task, _, seed = key
        if args.collect_only:
            d = run_dir(task, m, seed)
            return ({"status": "ok", **(_read_json(os.path.join(d, "bench_run.json")) or {})}
                    if run_finished(m, d) else {"status": "not run"})
        reuse = (os.path.join(output_dir, regime.name, task, m.reuse_from, f"seed{seed}")
                 if m.reuse_from else None)
        print(f"[{task}] {m.run_name} seed {seed} ...", flush=True)
        extra = ([f"ABLATIONS = {tuple(args.ablations)!r}"]
                 if m.run_name == "xprompt" and args.ablations is not None else [])
        out = run_one(m, task_for(task, seed), seed, regime.steps * m.steps_factor,
                      regime.eval_period, run_dir(task, m, seed), world_dir, args.timeout_s,
                      reuse, extra)
        print(f"[{task}] {m.run_name} seed {seed}: {out['status']} "
              f"({out.get('wall_time_s', '-')} s)", flush=True)
        return out

    for batch in (main_jobs, later_jobs):
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {pool.submit(launch, k, m): k for k, m in batch.items()}
            for fut in concurrent.futures.as_completed(futures):
                outcomes[futures[fut]] = fut.result()

    # ---- rows
    rows: List[Dict[str, Any]] = []
    for task in tasks:
        refs = None
        for m in methods:
            if missing[m.name]:
                rows.append(make_row(task, regime, m, {}, plan[m.name], "missing",
                                     ", ".join(missing[m.name])))
                continue
            per_seed: Dict[int, Dict[str, Any]] = {}
            if m.kind == "reference":
                refs = refs or reference_results(
                    task, os.path.join(output_dir, regime.name, task, "references.json"))
                per_seed[0] = {"status": "ok", **refs[m.reference]}
                rows.append(make_row(task, regime, m, per_seed, [0], note="no training"))
                continue
            for seed in plan[m.name]:
                out = outcomes.get((task, m.run_name, seed), {"status": "not run"})
                res = run_result(m, run_dir(task, m, seed)) if out["status"] == "ok" else None
                per_seed[seed] = dict(out, **(res or {}))
                if out["status"] == "ok" and res is None:
                    per_seed[seed]["status"] = "no result"
            note = "" if m.tier == "main" else f"tier extra: {len(plan[m.name])} seeds (cost)"
            if m.run_name != m.slug and m.part != "final":
                note = (note + "; " if note else "") + "part of the XPrompt pipeline run"
            rows.append(make_row(task, regime, m, per_seed, plan[m.name], note=note))

    claims = quality_claims.build_claims(rows)
    results: Dict[str, Any] = {
        "regime": dict(dataclasses.asdict(regime), description=regime.describe()),
        "tasks": tasks, "jobs": args.jobs,
        "run_time_s_total": round(sum(o.get("wall_time_s") or 0 for o in outcomes.values()), 1), "seeds": seeds,
        "extra_seeds": args.extra_seeds, "world_dir": world_dir,
        "data": "dev = 200 training examples (seed 0), test = the world's labelled "
                "validation file (400); train = the other 1800, k-shot drawn with the seed",
        "selection": "every run selects its checkpoint (XPrompt: also its masks) on dev "
                     "and reports test for that checkpoint",
        "interval": "95% Student-t over seeds; paired differences over common seeds",
        "results": rows, "claims": claims,
        "wall_time_s": round(time.time() - start, 1),
    }
    import platform

    import bench_env

    results["environment"] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": bench_env.cpu_model(), "cpus_available": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
        **{name: bench_env.pkg_version(name) for name in ("jax", "jaxlib", "flax", "optax")}}
    results["table"] = format_results(rows)
    results["claims_table"] = quality_claims.format_claims(claims)
    path = os.path.join(output_dir, "quality.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    png = plot(rows, os.path.join(output_dir, "quality.png"),
               f"regime {regime.name}: {regime.describe()}\nheld-out test accuracy, "
               f"mean and 95% CI over seeds (grey dots: seeds)")
    if args.results_dir:
        os.makedirs(args.results_dir, exist_ok=True)
        slim = dict(results)
        slim["results"] = [dict(r, per_seed={s: {k: v for k, v in p.items()
                                                  if k not in ("masking_curve", "log")}
                                              for s, p in r["per_seed"].items()})
                           for r in rows]
        with open(os.path.join(args.results_dir, "quality.json"), "w") as f:
            json.dump(slim, f, indent=1, default=str)
        if png:
            shutil.copy(png, os.path.join(args.results_dir, "quality.png"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    if args.write_readme:
        page = DOCS_PAGE
        png_rel = (os.path.relpath(os.path.join(os.path.abspath(args.results_dir),
                                                "quality.png"), os.path.dirname(page))
                   if args.results_dir and png else None)
        write_readme_block(readme_block(results, png_rel), page)
        print(f"wrote {page}")
    print("\n" + results["table"] + "\n\n" + results["claims_table"])
    print(f"\nwrote {path}" + (f" and {png}" if png else ""))
    return results


if __name__ == "__main__":
    main()
