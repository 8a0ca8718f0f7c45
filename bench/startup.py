#!/usr/bin/env python
"""Start-up of a short run with and without JAX's persistent compilation cache.

Runs the quickstart (prompt tuning on `world_rte`, the shipped tiny T5.1.1, no frozen-model
references) for `--steps` training steps, as a user would from a shell, in three ways, each
a fresh process in a fresh run directory:

- `off`: `--nocompilation_cache` (every program compiled);
- `cold`: the cache on, its folder empty (every program compiled and written);
- `warm`: the same command again (every program loaded from the cache).

`--rounds` rounds, each with its own empty cache folder (`$XDG_CACHE_HOME` of the process;
`$JAX_COMPILATION_CACHE_DIR` is unset for them). Reports median wall times and the median of
the per-round ratios `warm_over_cold` and `warm_over_off` (< 1: the warm start is faster).

    python bench/startup.py --json bench/results/startup.json
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

import bench_env

VARIANTS = ("off", "cold", "warm")


def run_once(steps: int, run_dir: str, cache_home: str, off: bool) -> float:
    env = dict(os.environ, XDG_CACHE_HOME=cache_home, JAX_PLATFORMS="cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cmd = [sys.executable, "-m", "xprompt_jax.quickstart", "--method=prompt_tuning",
           "--task=rte", f"--steps={steps}", "--no_references", f"--output_dir={run_dir}"]
    if off:
        cmd.append("--nocompilation_cache")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    times = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cache_home = os.path.join(tmp, f"cache{r}")
            for v in VARIANTS:
                times[v].append(run_once(args.steps, os.path.join(tmp, f"run{r}_{v}"),
                                         cache_home, off=(v == "off")))
                print(f"round {r} {v}: {times[v][-1]:.1f} s", flush=True)
    median = {v: statistics.median(t) for v, t in times.items()}
    ratios = {
        "warm_over_cold": statistics.median(w / c for w, c in zip(times["warm"], times["cold"])),
        "warm_over_off": statistics.median(w / o for w, o in zip(times["warm"], times["off"])),
        "cold_over_off": statistics.median(c / o for c, o in zip(times["cold"], times["off"])),
    }
    print(f"\n{'variant':<8} {'median s':>9}")
    for v in VARIANTS:
        print(f"{v:<8} {median[v]:>9.1f}")
    for k, x in ratios.items():
        print(f"{k}: {x:.3f}")
    result = {"steps": args.steps, "rounds": args.rounds, "times_s": times,
              "median_s": median, **ratios, "cpu": bench_env.cpu_model(),
              "cores": os.cpu_count(), "jax": bench_env.pkg_version("jax"),
              "load_average_at_end": os.getloadavg()[0]}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
