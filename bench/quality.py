#!/usr/bin/env python
"""Quality benchmark on the synthetic world: dev accuracy of every prompt method.

    python bench/quality.py [--tasks rte] [--seeds 0 1 2] [--steps 300] [--output_dir DIR]

For each world task (`world_<task>`: T5's format without the task name) and seed, with
the shipped frozen tiny T5.1.1 and the same step budget (`TRAIN_STEPS`) for every trained
method, the dev accuracy (%, rank classification, best evaluation of the run as in the
papers) of:

| row | what runs |
|---|---|
| task prefix (upper reference) | frozen model, input with the task name (`world_<task>_prefixed`), no training |
| no prompt (lower reference) | frozen model, no task name, no prompt, no training |
| prompt tuning | `prompt_tuning.gin` via `python -m xprompt_jax.train` |
| XPrompt | `xprompt.gin` via `python -m xprompt_jax.xprompt` (the whole pipeline) |
| XPrompt reversed / random / length masks | the same with `MASK_VARIANT` |
| EPT, EPT* | `ept.gin`, `ept_star.gin` via the train CLI |
| P-Tuning (MLP / LSTM) | `p_tuning_mlp.gin`, `p_tuning_lstm.gin` |
| ResPrompt | `resprompt.gin` |

Every run uses `gin/models/world_tiny.gin` -> the method file -> `gin/world/run.gin`
(sequence lengths, batch size, eval period) with `TRAIN_STEPS=--steps`, in its own
process (`<output_dir>/<task>/<method>/seed<k>/`, logs in `log.txt`); a run that already
finished is read back instead of rerun. A method whose gin file or Python module is not
in the checkout yet is listed as **missing** (with what is missing), never silently
skipped, so the table grows as methods land.

Prints a markdown table (mean +- std over seeds, per-seed values) and writes
`<output_dir>/quality.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from xprompt_jax import gin_utils  # noqa: E402
from xprompt_jax import quickstart  # noqa: E402

DEFAULT_TASKS = ("rte",)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_STEPS = 300


@dataclasses.dataclass(frozen=True)
class BenchMethod:
    """One row: a reference (no training) or a gin file run by a CLI entry point."""

    name: str
    kind: str                                  # 'reference' | 'train' | 'xprompt'
    gin_file: Optional[str] = None
    entry: Optional[str] = None
    bindings: Tuple[str, ...] = ()
    requires: Tuple[str, ...] = ()             # Python modules that must be importable
    reference: Optional[str] = None            # 'prefixed' | 'bare'

    @property
    def slug(self) -> str:
        """Run directory name: 'EPT*' -> 'ept_star' (distinct from 'EPT' -> 'ept')."""
        name = self.name.lower().replace("*", " star")
        return "".join(c if c.isalnum() else "_" for c in name).strip("_")


TRAIN = "xprompt_jax.train"
XPROMPT = "xprompt_jax.xprompt"
METHODS: Tuple[BenchMethod, ...] = (
    BenchMethod("task prefix (upper reference)", "reference", reference="prefixed"),
    BenchMethod("no prompt (lower reference)", "reference", reference="bare"),
    BenchMethod("prompt tuning", "train", "prompt_tuning.gin", TRAIN),
    BenchMethod("XPrompt", "xprompt", "xprompt.gin", XPROMPT,
                requires=("xprompt_jax.xprompt.pipeline",)),
    BenchMethod("XPrompt, reversed masks", "xprompt", "xprompt.gin", XPROMPT,
                ("MASK_VARIANT = 'reversed'",), requires=("xprompt_jax.xprompt.pipeline",)),
    BenchMethod("XPrompt, random masks", "xprompt", "xprompt.gin", XPROMPT,
                ("MASK_VARIANT = 'random'",), requires=("xprompt_jax.xprompt.pipeline",)),
    BenchMethod("XPrompt, length masks", "xprompt", "xprompt.gin", XPROMPT,
                ("MASK_VARIANT = 'length'",), requires=("xprompt_jax.xprompt.pipeline",)),
    BenchMethod("EPT", "train", "ept.gin", TRAIN, requires=("xprompt_jax.prompts.ept",)),
    # world/run.gin (included after the method file) sets PROMPT_LENGTH 20; EPT*'s own
    # length (ept_star.gin: 10) is restored by a binding, which comes after every file.
    BenchMethod("EPT*", "train", "ept_star.gin", TRAIN, ("PROMPT_LENGTH = 10",),
                requires=("xprompt_jax.prompts.ept",)),
    BenchMethod("P-Tuning (MLP)", "train", "p_tuning_mlp.gin", TRAIN,
                requires=("xprompt_jax.prompts.ptuning",)),
    BenchMethod("P-Tuning (LSTM)", "train", "p_tuning_lstm.gin", TRAIN,
                requires=("xprompt_jax.prompts.ptuning",)),
    BenchMethod("ResPrompt", "train", "resprompt.gin", TRAIN,
                requires=("xprompt_jax.prompts.resprompt",)),
)


def missing_parts(method: BenchMethod) -> List[str]:
    """What of `method` is not in this checkout (empty: it can run)."""
    missing = []
    if method.entry and importlib.util.find_spec(method.entry) is None:
        missing.append(f"module {method.entry}")
    for module in method.requires:
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


def run_result(method: BenchMethod, run_dir: str) -> Optional[Dict[str, Any]]:
    """The dev accuracy of a finished run (None if it has not finished)."""
    if method.kind == "xprompt":
        report = _read_json(os.path.join(run_dir, "report.json"))
        if not report:
            return None
        final = report.get("final_eval") or {}
        return {"accuracy": final.get("main_metric"), "source": "report.json final_eval",
                "parameters": report.get("parameters")}
    summary = _read_json(os.path.join(run_dir, "train_summary.json"))
    if not summary:
        return None
    best = summary.get("best_eval") or {}
    return {"accuracy": best.get("main_metric"), "best_step": best.get("step"),
            "source": "train_summary.json best_eval",
            "parameters": summary.get("num_trainable_params")}


def run_method(method: BenchMethod, task: str, seed: int, steps: int, run_dir: str,
               world_dir: str, timeout_s: Optional[float]) -> Dict[str, Any]:
    """Runs one (method, task, seed) in a subprocess (or reads its finished result)."""
    result = run_result(method, run_dir)
    if result is not None:
        return dict(result, status="ok", reused=True)
    os.makedirs(run_dir, exist_ok=True)
    qs_method = quickstart.Method(method.name, method.gin_file, method.entry, bindings=())
    args = quickstart.gin_args(qs_method, run_dir, task, world_dir, seed, steps,
                               method.bindings)
    cmd = [sys.executable, "-m", method.entry] + args
    start = time.time()
    with open(os.path.join(run_dir, "log.txt"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                  timeout=timeout_s)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - start
    result = run_result(method, run_dir)
    if rc != 0 or result is None:
        return {"status": "failed", "returncode": rc, "wall_time_s": round(wall, 1),
                "log": os.path.join(run_dir, "log.txt")}
    return dict(result, status="ok", wall_time_s=round(wall, 1))


def reference_rows(task: str) -> Dict[str, Dict[str, Any]]:
    from xprompt_jax.world import reference

    start = time.time()
    results = reference.reference_accuracies(task)
    wall = time.time() - start
    return {k: {"status": "ok", "accuracy": v["main_metric"], "wall_time_s": round(wall, 1)}
            for k, v in results.items()}


def aggregate(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    values = [r["accuracy"] for r in per_seed.values()
              if r.get("status") == "ok" and r.get("accuracy") is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def format_table(results: Dict[str, Any], seeds: Sequence[int]) -> str:
    lines = ["| task | method | dev accuracy (mean +- std) | per seed | status |",
             "|---|---|---|---|---|"]
    for task, rows in results["tasks"].items():
        for name, row in rows.items():
            if row["status"] == "missing":
                lines.append(f"| {task} | {name} | - | - | missing: "
                             f"{', '.join(row['missing'])} |")
                continue
            agg = row["aggregate"]
            mean = "-" if agg["mean"] is None else f"{agg['mean']:.1f} +- {agg['std']:.1f}"
            per = " / ".join("-" if r.get("accuracy") is None else f"{r['accuracy']:.1f}"
                             for r in row["seeds"].values())
            status = ", ".join(sorted({r["status"] for r in row["seeds"].values()}))
            lines.append(f"| {task} | {name} | {mean} | {per} | {status} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                        choices=quickstart.TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="TRAIN_STEPS of every trained method (equal budgets)")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="run only these rows (names as in the table; default all)")
    parser.add_argument("--output_dir", default=None,
                        help="default ./xprompt_runs/bench-quality-<timestamp>")
    parser.add_argument("--world_dir", default=None)
    parser.add_argument("--timeout_s", type=float, default=None, help="per run")
    parser.add_argument("--json", default=None,
                        help="also write the results here (as the other bench scripts)")
    args = parser.parse_args(argv)

    from xprompt_jax.world import writer

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output_dir = os.path.abspath(args.output_dir or
                                 os.path.join("xprompt_runs", f"bench-quality-{stamp}"))
    os.makedirs(output_dir, exist_ok=True)
    world_dir = writer.ensure_world_data(args.world_dir)
    print(f"output directory: {output_dir}\nworld data: {world_dir}", flush=True)
    methods = [m for m in METHODS if args.methods is None or m.name in args.methods]
    results: Dict[str, Any] = {"steps": args.steps, "seeds": args.seeds,
                               "world_dir": world_dir, "tasks": {}}
    start = time.time()
    for task in args.tasks:
        rows: Dict[str, Any] = {}
        refs = None
        for method in methods:
            missing = missing_parts(method)
            if missing:
                rows[method.name] = {"status": "missing", "missing": missing}
                print(f"[{task}] {method.name}: missing ({', '.join(missing)})", flush=True)
                continue
            per_seed: Dict[int, Dict[str, Any]] = {}
            if method.kind == "reference":
                refs = refs or reference_rows(task)
                for seed in args.seeds:  # deterministic: the same for every seed
                    per_seed[seed] = refs[method.reference]
            else:
                for seed in args.seeds:
                    run_dir = os.path.join(output_dir, task, method.slug, f"seed{seed}")
                    print(f"[{task}] {method.name} seed {seed} ...", flush=True)
                    per_seed[seed] = run_method(method, task, seed, args.steps, run_dir,
                                                world_dir, args.timeout_s)
            row = {"status": "ok", "kind": method.kind, "gin_file": method.gin_file,
                   "bindings": list(method.bindings), "seeds": per_seed,
                   "aggregate": aggregate(per_seed)}
            rows[method.name] = row
            agg = row["aggregate"]
            shown = "-" if agg["mean"] is None else f"{agg['mean']:.1f} +- {agg['std']:.1f}"
            print(f"[{task}] {method.name}: {shown}", flush=True)
            results["tasks"][task] = rows
            _write(output_dir, results)
        results["tasks"][task] = rows
    results["wall_time_s"] = round(time.time() - start, 1)
    results["table"] = format_table(results, args.seeds)
    import platform

    import bench_env  # bench/ (the script's directory) is on sys.path

    results["environment"] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": bench_env.cpu_model(), "cpus_available": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
        **{name: bench_env.pkg_version(name) for name in ("jax", "jaxlib", "flax", "optax")}}
    path = _write(output_dir, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    print("\n" + results["table"])
    print(f"\nwrote {path}")
    return results


def _write(output_dir: str, results: Dict[str, Any]) -> str:
    path = os.path.join(output_dir, "quality.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    return path


if __name__ == "__main__":
    main()
