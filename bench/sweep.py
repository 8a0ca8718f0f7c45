#!/usr/bin/env python
"""A sweep in one run against the same configurations as separate runs, on the world.

For each method (prompt tuning: Adafactor; EPT: AdamW) and each K in `--ks`, K learning
rates (`learning_rates(K)`) are trained two ways, as a user would from a shell:

- `sweep`: one `python -m xprompt_jax.train ... --gin.SWEEP="{'learning_rate': [...]}"`
  process (one frozen model, one compilation, every batch holding BATCH_SIZE rows per
  configuration: `training/sweep.py`);
- `separate`: K `python -m xprompt_jax.train ... --gin.LEARNING_RATE=<lr>` processes one
  after another. The separate runs of the largest K are run once; the separate time of a
  smaller K is the sum over its first K runs (the same configurations the sweep of that K
  trains).

Every process uses the CLIs' default persistent compilation cache, each variant in its own
folder that starts empty (so the separate runs after the first load the compiled steps from
it, as a user's second run does). Protocol of the quality benchmark (`--protocol quality`,
the default: `world_rte_heldout_16shot`, 30 steps of batch 32, dev every 10 steps,
its dev split of 200 examples: `gin/world/bench.gin`, its held-out test split off in both
variants) or the quickstart's
(`--protocol quickstart`: `world_rte`, 300 steps, dev every 100).

`step_time_ratio` (per method and K): one jitted training step of the K-entry sweep over K
steps of one configuration, measured in this process: `--step_repeats` rounds after two
warm-up rounds, each round timing one step of every variant in turn (interleaved, so a
change of the machine's load hits all alike), the median of the per-round ratios; the
same batch of BATCH_SIZE rows per configuration. `--step_ratios_only` measures just these
and updates them in an existing `--json`.

    python bench/sweep.py --json bench/results/sweep.json
    python bench/sweep.py --protocol quickstart --ks 8 --json bench/results/sweep_300.json

Writes `sweep_over_separate` (`{method: {K: wall of the sweep / wall of the K separate
runs}}`) and `step_time_ratio` (`{method: {K: ratio}}`) with every wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
for _p in (REPO_ROOT, BENCH_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_env  # noqa: E402

METHOD_FILES = {"prompt_tuning": "prompt_tuning.gin", "ept": "ept.gin"}
PROTOCOLS = {
    # task, TRAIN_STEPS, EVAL_PERIOD, extra gin files (bench.gin's held-out split is off in
    # both variants: the timing compares training with dev selection)
    "quality": ("world_rte_heldout_16shot", 30, 10, ["world/bench.gin"]),
    "quickstart": ("world_rte", 300, 100, []),
}


def learning_rates(k: int) -> List[float]:
    """K learning rates spread log-evenly over [0.01, 3] (the first of them for a smaller
    K cover the range coarsely: the order interleaves the grid)."""
    grid = [round(0.01 * (300 ** (i / 15)), 6) for i in range(16)]
    order = [0, 15, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7]
    return [grid[i] for i in order[:k]]


def base_args(method: str, protocol: str, run_dir: str) -> List[str]:
    task, steps, eval_period, extra_files = PROTOCOLS[protocol]
    return ["--gin_file=models/world_tiny.gin", f"--gin_file={METHOD_FILES[method]}",
            "--gin_file=world/run.gin", *[f"--gin_file={f}" for f in extra_files],
            f"--gin.MODEL_DIR={run_dir!r}", f"--gin.MIXTURE_OR_TASK_NAME={task!r}",
            f"--gin.TRAIN_STEPS={steps}", f"--gin.EVAL_PERIOD={eval_period}",
            "--gin.RANDOM_SEED=0", "--gin.EVAL_HELDOUT_SPLIT=None"]


def run_cli(args: Sequence[str], cache_dir: str, log_path: str) -> float:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir)
    cmd = [sys.executable, "-m", "xprompt_jax.train", *args]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=REPO_ROOT).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"bench/sweep.py: {' '.join(cmd)} failed (exit {rc}); log: {log_path}")
    return wall


def step_time_ratios(method: str, protocol: str, ks: Sequence[int], repeats: int,
                     tmp: str) -> Dict[int, float]:
    """One sweep step over K single steps, in this process (module docstring): the single
    run and every sweep built first, then `repeats` rounds each timing one step of every
    variant in turn (interleaved, so a change of the machine's load hits all alike); the
    ratio is the median over rounds of the per-round ratios."""
    import gin
    import jax

    import xprompt_jax.tasks  # noqa: F401
    from xprompt_jax import gin_utils
    from xprompt_jax.runs import build_trainer, configured_run
    from xprompt_jax.training.data import TrainBatchIterator

    task, _, _, extra_files = PROTOCOLS[protocol]

    def build(bindings: List[str], name: str):
        gin.clear_config()
        gin_utils.parse_gin(
            ["models/world_tiny.gin", METHOD_FILES[method], "world/run.gin", *extra_files],
            [f"MODEL_DIR = '{os.path.join(tmp, name)}'", f"MIXTURE_OR_TASK_NAME = '{task}'",
             "EVAL_PERIOD = None", "EVAL_HELDOUT_SPLIT = None", *bindings], finalize=False)
        try:
            trainer = build_trainer(configured_run())
        finally:
            gin.clear_config()
        batch = next(TrainBatchIterator(trainer.data_config))
        if trainer.batch_transform is not None:
            batch = trainer.batch_transform(batch)
        return {"trainer": trainer, "batch": trainer._global_batch(batch),
                "state": trainer.state}

    variants = {0: build([], "single")}
    for k in ks:
        variants[k] = build([f"SWEEP = {{'learning_rate': {learning_rates(k)!r}}}"],
                            f"sweep{k}")

    def one_step(v) -> float:
        t = v["trainer"]
        start = time.perf_counter()
        v["state"], metrics = t._step(v["state"], t.frozen, v["batch"], t.dropout_rng)
        jax.block_until_ready((v["state"], metrics))
        return time.perf_counter() - start

    times: Dict[int, List[float]] = {key: [] for key in variants}
    for r in range(repeats + 2):  # two warm-up rounds (compilation, first dispatch)
        for key, v in variants.items():
            t = one_step(v)
            if r >= 2:
                times[key].append(t)
    out = {}
    for k in ks:
        out[k] = statistics.median(j / (k * s) for j, s in zip(times[k], times[0]))
        print(f"{method} K={k}: sweep step {statistics.median(times[k]) * 1e3:.1f} ms, "
              f"single step {statistics.median(times[0]) * 1e3:.1f} ms, ratio {out[k]:.3f}",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--methods", default="prompt_tuning,ept")
    parser.add_argument("--ks", default="4,8,16")
    parser.add_argument("--protocol", default="quality", choices=sorted(PROTOCOLS))
    parser.add_argument("--step_repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--step_ratios_only", action="store_true",
                        help="measure only step_time_ratio and update it in --json")
    args = parser.parse_args()
    if args.step_ratios_only:
        with open(args.json, encoding="utf-8") as f:
            result = json.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            for method in args.methods.split(","):
                result["step_time_ratio"][method] = step_time_ratios(
                    method, result["protocol"], result["ks"], args.step_repeats,
                    os.path.join(tmp, method))
        result["step_repeats"] = args.step_repeats
        result["load_average_at_step_ratios"] = os.getloadavg()[0]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result["step_time_ratio"], indent=1))
        return
    methods = args.methods.split(",")
    ks = sorted(int(k) for k in args.ks.split(","))
    result = {"protocol": args.protocol, "task": PROTOCOLS[args.protocol][0],
              "train_steps": PROTOCOLS[args.protocol][1],
              "eval_period": PROTOCOLS[args.protocol][2], "ks": ks,
              "learning_rates": {k: learning_rates(k) for k in ks},
              "wall_s": {}, "sweep_over_separate": {}, "step_time_ratio": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            walls = {"separate_each": [], "sweep": {}}
            cache = os.path.join(tmp, method, "cache_separate")
            for i, lr in enumerate(learning_rates(max(ks))):
                run_dir = os.path.join(tmp, method, f"separate{i}")
                wall = run_cli(base_args(method, args.protocol, run_dir) +
                               [f"--gin.LEARNING_RATE={lr}"], cache, run_dir + ".log")
                walls["separate_each"].append(wall)
                print(f"{method} separate run {i} (lr {lr}): {wall:.1f} s", flush=True)
            for k in ks:
                run_dir = os.path.join(tmp, method, f"sweep{k}")
                sweep = f"{{'learning_rate': {learning_rates(k)!r}}}"
                walls["sweep"][k] = run_cli(
                    base_args(method, args.protocol, run_dir) + [f"--gin.SWEEP={sweep}"],
                    os.path.join(tmp, method, f"cache_sweep{k}"), run_dir + ".log")
                print(f"{method} sweep K={k}: {walls['sweep'][k]:.1f} s", flush=True)
            walls["separate"] = {k: sum(walls["separate_each"][:k]) for k in ks}
            result["wall_s"][method] = walls
            result["sweep_over_separate"][method] = {
                k: walls["sweep"][k] / walls["separate"][k] for k in ks}
            result["step_time_ratio"][method] = step_time_ratios(
                method, args.protocol, ks, args.step_repeats, os.path.join(tmp, method))
    print(f"\nprotocol {args.protocol}: {result['task']}, {result['train_steps']} steps, "
          f"dev every {result['eval_period']}")
    print(f"{'method':<14} {'K':>3} {'sweep s':>9} {'separate s':>11} "
          f"{'sweep/separate':>15} {'step ratio':>11}")
    for method in methods:
        w = result["wall_s"][method]
        for k in ks:
            print(f"{method:<14} {k:>3} {w['sweep'][k]:>9.1f} {w['separate'][k]:>11.1f} "
                  f"{result['sweep_over_separate'][method][k]:>15.3f} "
                  f"{result['step_time_ratio'][method][k]:>11.3f}")
    result.update({"cpu": bench_env.cpu_model(), "cores": os.cpu_count(),
                   "jax": bench_env.pkg_version("jax"),
                   "load_average_at_end": os.getloadavg()[0]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
