#!/usr/bin/env python
"""The README's quickstart numbers, regenerated from real quickstart runs (not hand-copied).

    python bench/quickstart_numbers.py --write_readme            # 2 runs: all threads, 1
    python bench/quickstart_numbers.py --run_dirs D1 D2 --write_readme   # finished runs

Runs `python -m xprompt_jax.quickstart` (the defaults: XPrompt on `world_rte`, seed 0) once
per `--threads` entry - `0` leaves XLA's CPU thread pool as it is, `1` restricts it to one
thread (`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`) -
so that the two runs differ in the order of floating-point reductions the way two machines
do, reads each run's `report.json`, and writes the block between the markers
`<!-- quickstart-numbers:begin -->` and `<!-- quickstart-numbers:end -->` of README.md:
the numbers of the first run and how the others differ (accuracies, the chosen masks,
parameters, wall time). `--json PATH` writes the extracted numbers too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import readme_block  # (bench/: the directory of this script is on sys.path)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO_ROOT, "README.md")
BEGIN = "<!-- quickstart-numbers:begin (bench/quickstart_numbers.py writes this block) -->"
END = "<!-- quickstart-numbers:end -->"
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def run_quickstart(run_dir: str, threads: int) -> float:
    """Runs the default quickstart into `run_dir`; returns its wall time (s)."""
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD).strip()
    cmd = [sys.executable, "-m", "xprompt_jax.quickstart", "--output_dir", run_dir]
    start = time.time()
    with open(run_dir + ".log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                       check=True)
    return time.time() - start


def numbers(run_dir: str, threads: Optional[int] = None) -> Dict[str, Any]:
    """The README's numbers from a finished quickstart run directory."""
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    q = report["quickstart"]
    params = report.get("parameters") or {}
    return {"run_dir": run_dir, "threads": threads, "task": q["task"], "seed": q["seed"],
            "prompt_tuning": q.get("prompt_tuning_accuracy"),
            "xprompt": q.get("xprompt_accuracy"),
            "no_prompt": (q.get("references") or {}).get("bare"),
            "task_name": (q.get("references") or {}).get("prefixed"),
            "chosen": q.get("chosen"),
            "tokens": q.get("surviving_tokens"), "pieces": q.get("surviving_pieces"),
            "prompt_length": report.get("prompt_length"),
            "total_pieces": (report.get("prompt_length") or 0) * (report.get("num_pieces") or 0),
            "pt_parameters": params.get("prompt_tuning"),
            "xprompt_parameters": params.get("xprompt"),
            "wall_time_s": q.get("wall_time_s"),
            "stage_seconds": report.get("timings_s")}


def _threads(n: Dict[str, Any]) -> str:
    return {None: "threads unknown", 0: "XLA's default threads", 1: "1 XLA thread"}.get(
        n["threads"], f"{n['threads']} threads")


def block(runs: Sequence[Dict[str, Any]], machine: str) -> str:
    """The README block (markdown) for the runs, the first one in full."""
    a = runs[0]
    lines = [
        BEGIN,
        f"Measured here ({machine}; `{a['task']}`, seed {a['seed']}, the defaults, "
        f"{_threads(a)}): prompt tuning {a['prompt_tuning']:.1f} "
        f"({a['pt_parameters']:,} parameters), XPrompt {a['xprompt']:.1f} after pruning to "
        f"{a['tokens']} of {a['prompt_length']} tokens and {a['pieces']} of "
        f"{a['total_pieces']} pieces ({a['xprompt_parameters']:,} parameters), against "
        f"{a['no_prompt']:.1f} without a prompt and {a['task_name']:.1f} with the task name; "
        f"{a['wall_time_s']:.0f} s for the whole pipeline (dev accuracy: the quickstart "
        f"selects and reports on dev; `bench/quality.py` reports a held-out test split).",
    ]
    stages = a.get("stage_seconds")
    if stages:
        order = ["stage1", "scores", "masking_curve", "search", "rewind_and_final_eval",
                 "ablations", "report"]  # the pipeline's order (report.json sorts its keys)
        names = {"stage1": "stage 1 (with building the trainer and loading the frozen model)",
                 "scores": "importance scores"}
        keys = [k for k in order if k in stages] + sorted(
            k for k in stages if k not in order and k != "total")
        parts = ", ".join(f"{names.get(k, k.replace('_', ' '))} {stages[k]:.0f} s"
                          for k in keys)
        lines.append(f"Of those, the pipeline's stages ({stages['total']:.0f} s): {parts}; the "
                     f"rest ({a['wall_time_s'] - stages['total']:.0f} s) is start-up (imports, "
                     f"world data) and the two reference evaluations.")
    keys = ("prompt_tuning", "xprompt", "tokens", "pieces", "xprompt_parameters")
    for b in runs[1:]:
        diffs = [k for k in keys if b[k] != a[k]]
        if not diffs:
            lines.append(f"A second run with {_threads(b)} gave the same accuracies and "
                         f"masks ({b['wall_time_s']:.0f} s).")
        else:
            lines.append(
                f"A second run with {_threads(b)} differed: prompt tuning "
                f"{b['prompt_tuning']:.1f}, XPrompt {b['xprompt']:.1f} with {b['tokens']} "
                f"tokens and {b['pieces']} pieces ({b['xprompt_parameters']:,} parameters; "
                f"{b['wall_time_s']:.0f} s).")
    lines.append(
        "Between machines the accuracies move by a few tenths and the chosen masks can "
        "change completely: at the quickstart's 300 steps on the full training set the "
        "world saturates, most search candidates score 99-100 on dev, and ties go to the "
        "sparser mask, so float rounding (thread count, CPU kind) decides which candidate "
        "wins. Regenerate with `python bench/quickstart_numbers.py --write_readme`.")
    lines.append(END)
    return "\n".join(lines)


def write_readme(text: str, path: str = README) -> None:
    readme_block.replace_block(path, BEGIN, END, text)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    from xprompt_jax.fileio import runs_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", nargs="+", type=int, default=[0, 1],
                        help="one run per entry: 0 = XLA's default, 1 = one thread")
    parser.add_argument("--run_dirs", nargs="*", default=None,
                        help="read these finished runs instead of running")
    parser.add_argument("--output_dir", default=os.path.join(runs_dir(), "quickstart-numbers"),
                        help="default $XPROMPT_RUNS_DIR/quickstart-numbers "
                             "($XPROMPT_RUNS_DIR defaults to ~/xprompt_runs)")
    parser.add_argument("--machine", default=None,
                        help="how the README names the machine (default: CPU count)")
    parser.add_argument("--write_readme", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    runs = []
    if args.run_dirs:
        for i, d in enumerate(args.run_dirs):
            runs.append(numbers(d, args.threads[i] if i < len(args.threads) else None))
    else:
        os.makedirs(args.output_dir, exist_ok=True)
        for threads in args.threads:
            d = os.path.abspath(os.path.join(args.output_dir, f"threads{threads}"))
            print(f"quickstart ({threads or 'default'} threads) -> {d}", flush=True)
            run_quickstart(d, threads)
            runs.append(numbers(d, threads))
    machine = args.machine or f"{os.cpu_count()} CPU cores, {platform.machine()}"
    text = block(runs, machine)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)
    if args.write_readme:
        write_readme(text)
        print(f"wrote {README}")
    return runs


if __name__ == "__main__":
    main()
