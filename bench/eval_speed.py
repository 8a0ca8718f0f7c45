#!/usr/bin/env python
"""Evaluation speed: shared-encoder rank classification against per-row scoring,
trimmed against padded batches, and the XPrompt search before / after, in one process on one
model: the shipped world tiny T5.1.1 (d=128, 3+2 layers, 768-piece vocabulary) with a
20-token `MaskedSoftPrompt` (16 pieces), as in the quickstart.

1. Rank scoring, synthetic inputs of exactly S tokens (S = 256, 512; random ids) and L = 2
   or 3 verbalizers of 1-2 tokens + EOS, targets length 4: today's per-row path
   (`bench/per_row.py`: one full forward pass per (example, verbalizer) row, rows
   padded to the feature lengths, `--batch` rows per call) against the shared-encoder path
   (`evaluation.scorers.option_scores` on `data.option_features`: one encoder pass per example,
   verbalizers side by side in one decoder row, `--batch` examples per call). Inputs all
   have length S, so trimming plays no part here: the ratio is the encoder sharing alone.
   The ideal ratio is the ratio of XLA's compiled FLOP counts
   (`jax.jit(...).lower(...).compile().cost_analysis()`) over the same examples.
2. The world dev split (`world_rte`, 400 examples, inputs 23-31 of 48 tokens): `Evaluator`
   rank classification per-row untrimmed (the earlier default) against shared + trimmed
   (the default now), and generation padded against trimmed; predictions compared.
3. The XPrompt search on `world_rte` (token then piece level, the pipeline's sequence:
   candidates = unpruned + one per ratio, rescoring the survivors between ratios, one
   scoring on the best tokens before the piece level), before (per-row untrimmed candidate
   scoring; a new train-split input pipeline per (re)scoring, padded batches) and after
   (shared-encoder trimmed scoring; one reused draw of trimmed batches). Stage-1 params:
   the prompt's initial values (the search's cost does not depend on them).

Timing: each variant runs once untimed (compilation), then `--rounds` interleaved rounds;
medians and the median of per-round ratios are reported (< 1: the new path is faster).
The search runs once per variant (`after` first, so `before` gets no warmer caches).

    python bench/eval_speed.py --json /tmp/eval_speed.json   # defaults (25 min on 2 cores at load ~17)
    python bench/eval_speed.py --quick                      # smoke run (6 min at load ~12)
    python bench/eval_speed.py --full_search                # the quickstart's search sizes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import bench_env  # bench/ (the script's directory) is on sys.path


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--examples", type=int, default=64, help="synthetic examples (part 1)")
    p.add_argument("--batch", type=int, default=32, help="rows / examples per call")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    p.add_argument("--search_ratios", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--num_score_examples", type=int, default=256)
    p.add_argument("--full_search", action="store_true",
                   help="the quickstart's search: ratios 0.1..0.9, 1024 score examples")
    p.add_argument("--skip_search", action="store_true")
    p.add_argument("--task", default="world_rte")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.examples, args.lengths = 1, 32, [256]
        args.search_ratios, args.num_score_examples = [0.5], 64
    if args.full_search:
        args.search_ratios = [round(0.1 * i, 1) for i in range(1, 10)]
        args.num_score_examples = 1024
    return args


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _rounds(variants, rounds):
    """{name: [seconds per round]} after one untimed call each; order rotates."""
    names = list(variants)
    first = {n: _timed(variants[n])[0] for n in names}
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(_timed(variants[n])[0])
    return times, first


def _flops(jitted, *args):
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def build_model():
    import jax

    from xprompt_jax.checkpoints import load_t5x_params
    from xprompt_jax.models import PromptedT5
    from xprompt_jax.prompts import initializers
    from xprompt_jax.training.frozen_model import init_variables
    from xprompt_jax.world import paths, pretraining as pretrain
    from xprompt_jax.xprompt import MaskedSoftPrompt

    model = PromptedT5(pretrain.model_config(), prompt=MaskedSoftPrompt(
        length=20, num_pieces=16, init=initializers.uniform()))
    params = load_t5x_params(paths.checkpoint_path())
    variables = init_variables(model, params, {"inputs": 48, "targets": 4},
                               jax.random.PRNGKey(0))
    variables.pop("params_axes", None)
    return model, variables


def rank_scoring(model, variables, args, vocab_size):
    """Part 1: per-row vs shared-encoder scoring on synthetic S-token inputs."""
    import jax
    import numpy as np

    import per_row as per_row_lib  # bench/
    from xprompt_jax.evaluation import scorers
    from xprompt_jax.training import data as data_lib

    rng = np.random.RandomState(0)
    verbalizers = [[17, 1], [23, 41, 1], [29, 1]]
    row_jit = jax.jit(per_row_lib.row_scores, static_argnums=(0,))
    opt_jit = jax.jit(scorers.option_scores, static_argnums=(0, 3))
    out = {}
    for length in args.lengths:
        lengths = {"inputs": length, "targets": 4}
        examples = [{"inputs": list(rng.randint(3, vocab_size - 100, length - 1)) + [1]}
                    for _ in range(args.examples)]
        for num in (2, 3):
            options = [verbalizers[:num]] * len(examples)
            rows = [{"inputs": ex["inputs"], "targets": t} for ex in examples
                    for t in verbalizers[:num]]
            row_batches = [data_lib.examples_to_features(rows[i:i + args.batch], lengths,
                                                         args.batch)
                           for i in range(0, len(rows), args.batch)]
            opt_batches = [data_lib.option_features(examples[i:i + args.batch],
                                                    options[i:i + args.batch], lengths,
                                                    args.batch)
                           for i in range(0, len(examples), args.batch)]

            def per_row():
                return np.concatenate([np.asarray(row_jit(model, variables, b))
                                       for b in row_batches])[:len(rows)].reshape(-1, num)

            def shared():
                return np.concatenate([np.asarray(opt_jit(model, variables, b, num))
                                       for b in opt_batches])[:len(examples)]

            a, b = per_row(), shared()
            times, first = _rounds({"per_row": per_row, "shared": shared}, args.rounds)
            flops_row = _flops(row_jit, model, variables, row_batches[0]) * len(row_batches)
            flops_opt = _flops(opt_jit, model, variables, opt_batches[0], num) * len(opt_batches)
            ratios = [s / r for s, r in zip(times["shared"], times["per_row"])]
            out[f"L{num}_S{length}"] = {
                "labels": num, "input_length": length, "examples": len(examples),
                "per_row_s": statistics.median(times["per_row"]),
                "shared_s": statistics.median(times["shared"]),
                "shared_over_per_row": statistics.median(ratios), "min_ratio": min(ratios),
                "first_call_s": first, "flops_per_row": flops_row, "flops_shared": flops_opt,
                "ideal_ratio_flops": flops_opt / flops_row,
                "max_abs_score_diff": float(np.max(np.abs(a - b))),
                "predictions_identical": bool(np.all(a.argmax(-1) == b.argmax(-1))),
                "decoder_length_per_row": int(row_batches[0]["decoder_target_tokens"].shape[1]),
                "decoder_length_shared": int(opt_batches[0]["decoder_target_tokens"].shape[1]),
            }
    return out


def world_eval(model, variables, args):
    """Part 2: Evaluator on the world dev split, earlier defaults vs now."""
    import per_row as per_row_lib  # bench/
    from xprompt_jax.evaluation import EvalConfig, Evaluator

    lengths = {"inputs": 48, "targets": 4}
    out = {}
    for mode in ("rank_classification", "generation"):
        evs = {name: Evaluator(model, args.task, lengths,
                               EvalConfig(mode=mode, batch_size=args.batch, **kw))
               for name, kw in (("before", dict(trim_batches=False)), ("after", {}))}
        per_row = mode == "rank_classification"  # the earlier rank scorer, before

        def run(name, ev):
            if name == "before" and per_row:
                return per_row_lib.per_row_results(ev, variables)[0]
            return ev.evaluate(variables)

        results = {n: run(n, ev) for n, ev in evs.items()}
        texts = {}
        for n, ev in evs.items():  # full predictions, not only the sample
            texts[n] = (per_row_lib.per_row_texts(ev, variables)[0] if n == "before" and per_row
                        else ev.predict(variables).texts[0])
        times, first = _rounds({n: (lambda n=n, ev=ev: run(n, ev))
                                for n, ev in evs.items()}, args.rounds)
        ratios = [a / b for a, b in zip(times["after"], times["before"])]
        out[mode] = {"before_s": statistics.median(times["before"]),
                     "after_s": statistics.median(times["after"]),
                     "after_over_before": statistics.median(ratios),
                     "first_call_s": first, "examples": len(evs["after"].examples),
                     "metrics_identical": results["before"]["metrics"] ==
                     results["after"]["metrics"],
                     "predictions_identical": texts["before"] == texts["after"],
                     "main_metric": results["after"]["main_metric"]}
    return out


def xprompt_search(model, variables, args, variant):
    """Part 3: one XPrompt search (token then piece level) with the `variant` paths."""
    import dataclasses

    import numpy as np

    from xprompt_jax.training.data import DataConfig, TrainBatchIterator
    from xprompt_jax.evaluation import EvalConfig, Evaluator
    from xprompt_jax.xprompt import ImportanceScorer, pruning, search
    from xprompt_jax.xprompt.scoring import ScoreBatches

    import per_row as per_row_lib  # bench/

    lengths = {"inputs": 48, "targets": 4}
    before = variant == "before"
    config = EvalConfig(batch_size=args.batch, **(dict(trim_batches=False) if before else {}))
    evaluator = Evaluator(model, args.task, lengths, config)
    data = DataConfig(args.task, lengths, args.batch, seed=7919)
    trainable = {"prompt": variables["params"]["prompt"]}
    frozen = {k: v for k, v in variables.items() if k != "params"}
    frozen["params"] = {k: v for k, v in variables["params"].items() if k != "prompt"}
    scorer = ImportanceScorer(model, trainable, frozen, per_example=True)
    reused = ScoreBatches(lambda: TrainBatchIterator(data, shard_index=0, num_shards=1))
    n = args.num_score_examples
    timings = {"scoring_s": 0.0, "candidates_s": 0.0, "scorings": 0, "candidate_evals": 0}

    def score(masks, offset):
        if before:  # the earlier pipeline: a new input pipeline per (re)scoring, padded
            cfg = dataclasses.replace(data, seed=data.seed + offset)
            batches = ScoreBatches(lambda: TrainBatchIterator(cfg, shard_index=0,
                                                              num_shards=1), trim=False)
        else:
            batches = reused
        seconds, result = _timed(lambda: scorer.score(*masks, batches, n))
        timings["scoring_s"] += seconds
        timings["scorings"] += 1
        return result

    def evaluate(candidates):
        seconds, results = _timed(lambda: (
            per_row_lib.per_row_results(evaluator, variables, candidates) if before
            else search.evaluate_candidates(evaluator, variables, candidates)))
        timings["candidates_s"] += seconds
        timings["candidate_evals"] += len(candidates)
        return results

    def level(ratios, scores, start, prune, offset):
        candidates = [start]
        for i, ratio in enumerate(ratios):
            candidates.append(prune(scores, candidates[-1], ratio))
            if i + 1 < len(ratios):
                scores = score(candidates[-1], offset + i)
        results = evaluate(candidates)
        kept = [int(pruning.effective_piece_mask(t, p).sum()) for t, p in candidates]
        return candidates[search.choose_best(results, kept)], results

    start = time.perf_counter()
    m, k = 20, 16
    masks = (np.ones(m, np.float32), np.ones((m, k), np.float32))
    initial = score(masks, 0)
    masks, token_results = level(args.search_ratios, initial, masks, lambda sc, c, r: (
        pruning.prune_tokens(sc.token, c[0], r), c[1]), 1)
    token_mask, base = masks[0], int(pruning.effective_piece_mask(*masks).sum())
    scores = score(masks, 100)
    masks, piece_results = level(args.search_ratios, scores, masks, lambda sc, c, r: (
        token_mask, pruning.prune_pieces(sc.piece, c[1], token_mask, r, base)), 101)
    timings["total_s"] = time.perf_counter() - start
    timings["metrics"] = [r["main_metric"] for r in token_results + piece_results]
    timings["chosen_kept_pieces"] = int(pruning.effective_piece_mask(*masks).sum())
    return timings


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    import jax

    from xprompt_jax.world import seqio_tasks  # noqa: F401 - registers world_* tasks

    model, variables = build_model()
    vocab_size = model.config.vocab_size
    report = {"settings": vars(args), "env": {
        "cpu": bench_env.cpu_model(), "jax": bench_env.pkg_version("jax"),
        "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg()}}
    report["rank_scoring"] = rank_scoring(model, variables, args, min(vocab_size, 700))
    report["world_eval"] = world_eval(model, variables, args)
    if not args.skip_search:
        after = xprompt_search(model, variables, args, "after")
        before = xprompt_search(model, variables, args, "before")
        report["search"] = {"before": before, "after": after,
                            "same_metrics": before["metrics"] == after["metrics"]}
        report["search_after_over_before"] = after["total_s"] / before["total_s"]
    report["env"]["loadavg_end"] = os.getloadavg()

    rs = report["rank_scoring"]

    def worst(num, key):
        values = [v[key] for v in rs.values() if v["labels"] == num]
        return max(values) if values else None

    report["shared_over_per_row_l2"] = worst(2, "shared_over_per_row")
    report["shared_over_per_row_l3"] = worst(3, "shared_over_per_row")
    report["ideal_ratio_flops_l2"] = worst(2, "ideal_ratio_flops")
    report["ideal_ratio_flops_l3"] = worst(3, "ideal_ratio_flops")
    report["predictions_identical"] = bool(
        all(v["predictions_identical"] for v in rs.values()) and
        all(v["predictions_identical"] for v in report["world_eval"].values()))

    print(f"{'rank scoring':<22} {'per-row s':>10} {'shared s':>9} {'ratio':>6} {'min':>6} "
          f"{'FLOP ideal':>10} {'max |d|':>9} {'same':>5}")
    for name, v in rs.items():
        print(f"{name:<22} {v['per_row_s']:>10.3f} {v['shared_s']:>9.3f} "
              f"{v['shared_over_per_row']:>6.2f} {v['min_ratio']:>6.2f} "
              f"{v['ideal_ratio_flops']:>10.2f} {v['max_abs_score_diff']:>9.1e} "
              f"{str(v['predictions_identical']):>5}")
    print(f"\n{'world dev (' + args.task + ')':<22} {'before s':>10} {'after s':>9} {'ratio':>6}"
          f" {'same':>5}")
    for mode, v in report["world_eval"].items():
        print(f"{mode:<22} {v['before_s']:>10.3f} {v['after_s']:>9.3f} "
              f"{v['after_over_before']:>6.2f} {str(v['predictions_identical']):>5}")
    if "search" in report:
        print(f"\n{'XPrompt search':<22} {'total s':>10} {'scoring s':>10} {'candidates s':>13}")
        for name in ("before", "after"):
            v = report["search"][name]
            print(f"{name:<22} {v['total_s']:>10.1f} {v['scoring_s']:>10.1f} "
                  f"{v['candidates_s']:>13.1f}")
        print(f"search after / before: {report['search_after_over_before']:.2f} "
              f"({report['search']['after']['scorings']} scorings of "
              f"{args.num_score_examples} examples, "
              f"{report['search']['after']['candidate_evals']} candidate evaluations)")
    print(f"\nshared_over_per_row_l2 {report['shared_over_per_row_l2']:.2f} (ideal "
          f"{report['ideal_ratio_flops_l2']:.2f}), l3 {report['shared_over_per_row_l3']:.2f} "
          f"(ideal {report['ideal_ratio_flops_l3']:.2f}); predictions identical: "
          f"{report['predictions_identical']}; load average {report['env']['loadavg_start']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
