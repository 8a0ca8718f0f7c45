#!/usr/bin/env python
"""XPrompt search costs: batched vs sequential candidate evaluation, and importance scoring
vs a plain train step, on the same data, in one process.

Setup: a randomly initialised T5.1.1-style `PromptedT5` (gated GELU, untied
`logits_dense`, the real T5 vocabulary size) with a `MaskedSoftPrompt` (m tokens, k pieces),
built by `Trainer` exactly as the pipeline builds it (no pretrained weights), and a small
synthetic seqio task registered here (`sentence: w1 .. wn` -> `yes` if it contains `red`,
else `no`; T5 SentencePiece vocabulary from `tests/fixtures/t5_spm` or `--vocab`).

1. Candidate search: `search.evaluate_candidates(evaluator, variables, candidates,
   batched=True)` (the candidate axis folded into the batch: one compiled pass per chunk of
   dev rows for all C candidates) against `batched=False` (one `Evaluator.evaluate` per
   candidate) on the same C random candidates, in `rank_classification` and `generation`
   modes. Candidate i prunes ratio r_i = 0.9 (i + 1) / C of the tokens and then r_i of the
   surviving pieces (`pruning.prune_tokens` / `prune_pieces` with random scores). Both
   paths are timed end to end (features, device calls, decoding of texts, metrics). The
   two paths' per-candidate metrics, full predictions and (rank classification) raw
   verbalizer scores are compared (recorded once, in the untimed first call).
   `--batched_eval_batch_size R'` adds the variant `batched_small`: the batched path with
   R' dev rows per candidate per chunk (C * R' rows per compiled call instead of C * R).
   On CPU, a call's `[rows, targets_length, vocab]` float32 logits above 32 MiB (glibc's
   largest mmap threshold) are mapped fresh on every call, and the page faults can cost
   more than the saved per-call overhead; `settings.rank_logits_bytes_per_call` shows it.
2. Importance scoring: `ImportanceScorer.score` over N examples (`per_example=True`, one
   backward pass per batch w.r.t. per-example masks; and `per_example=False`, the gradient
   of the batch mean) against the trainer's jitted, donated `_step` (forward, backward
   w.r.t. the prompt, Adafactor update) over the same N examples in the same batches. The
   batches are read from the seqio task once, before timing; both sides get the same
   host numpy batches and shard them per call as `Trainer.run` / the pipeline do.

Timing: every variant runs once untimed first (compilation + warm-up; its wall time is
reported as `first_call_s`, and `first_call_s - median_s` as `compile_est_s`); then
`--rounds` rounds, in each round every variant once (the order rotates from round to
round). Reported: median / min wall time per variant, and the median over rounds of the
per-round ratios (`batched_over_sequential_*` = batched time / sequential time, < 1 means
batched is faster; `scoring_over_train_step_*` = scoring time / train-step time over the
same examples); `cpu_time_ratios` are the same ratios of process CPU time (all threads),
less sensitive to other processes on a shared machine.

    python bench/xprompt_search.py --quick                          # smoke run, ~1 min
    python bench/xprompt_search.py --json /tmp/xprompt_search.json  # defaults, ~2-3 min on 2 cores
    python bench/xprompt_search.py --batched_eval_batch_size 3      # + C*3-row batched calls
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import bench_env  # bench/ (the script's directory) is on sys.path

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_VOCAB = REPO_ROOT / "tests" / "fixtures" / "t5_spm" / "sentencepiece.model"
TASK_NAME = "xprompt_bench_search_synthetic"
WORDS = ["red", "blue", "green", "cat", "dog", "bird", "tree", "house", "river", "stone",
         "small", "large", "quick", "slow", "old", "new"]
MODES = ("rank_classification", "generation")
SCORE_VARIANTS = ("train_step", "score_per_example", "score_batch_grad")

QUICK_DEFAULTS = dict(emb_dim=32, layers=1, num_heads=2, head_dim=16, mlp_dim=64,
                      prompt_length=8, num_pieces=4, num_candidates=4, eval_examples=16,
                      batch_size=8, score_examples=16, inputs_length=24, targets_length=4,
                      rounds=2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--emb_dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="encoder and decoder layers each")
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=16)
    p.add_argument("--mlp_dim", type=int, default=256)
    p.add_argument("--vocab_size", type=int, default=32128,
                   help="model vocabulary (>= the SentencePiece vocabulary + 100 extra ids)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="model dropout rate (used by the train step only; scoring and "
                        "evaluation never use dropout)")
    p.add_argument("--prompt_length", type=int, default=20, help="m")
    p.add_argument("--num_pieces", type=int, default=16, help="k (emb_dim must divide by k)")
    p.add_argument("--token_prune_mode", choices=("remove", "zero"), default="remove")
    p.add_argument("--num_candidates", type=int, default=9, help="C")
    p.add_argument("--eval_examples", type=int, default=64, help="dev examples per evaluation")
    p.add_argument("--batch_size", type=int, default=32,
                   help="train / scoring batch size, and dev rows per evaluation chunk")
    p.add_argument("--eval_batch_size", type=int, default=None,
                   help="dev rows per chunk (default: --batch_size)")
    p.add_argument("--batched_eval_batch_size", type=int, default=None,
                   help="also time the batched path with this many dev rows per candidate "
                        "per chunk (variant 'batched_small'; e.g. eval_batch_size // "
                        "num_candidates keeps each compiled call at about eval_batch_size "
                        "rows, as the sequential path has)")
    p.add_argument("--score_examples", type=int, default=64,
                   help="N: examples for importance scoring and for the train steps")
    p.add_argument("--inputs_length", type=int, default=32)
    p.add_argument("--targets_length", type=int, default=8)
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated eval modes to benchmark")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None,
                   help="CPUs for JAX (restricts the process affinity before JAX starts); "
                        "default: all CPUs this process may run on")
    p.add_argument("--vocab", default=str(DEFAULT_VOCAB), help="SentencePiece model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke run (explicit flags still win)")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**QUICK_DEFAULTS)
        args = p.parse_args(argv)
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        p.error(f"--modes {args.modes}: choose from {list(MODES)}")
    if args.emb_dim % args.num_pieces:
        p.error(f"--emb_dim {args.emb_dim} is not divisible by --num_pieces {args.num_pieces}")
    if args.num_candidates < 1 or args.rounds < 1:
        p.error("--num_candidates and --rounds must be >= 1")
    if args.batched_eval_batch_size is not None and args.batched_eval_batch_size < 1:
        p.error("--batched_eval_batch_size must be >= 1")
    if not os.path.exists(args.vocab):
        p.error(f"SentencePiece model not found: {args.vocab} (pass --vocab)")
    return args


def _set_threads(requested):
    """Restricts the CPU affinity before JAX starts; returns the CPU count."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    if requested is not None and 0 < requested < len(cpus):
        cpus = cpus[:requested]
        os.sched_setaffinity(0, cpus)
    return len(cpus)


# ------------------------------------------------------------------------------ task
def _examples(split: str, n: int, seed: int):
    import numpy as np

    rng = np.random.RandomState(seed + (0 if split == "train" else 1000))
    inputs, targets = [], []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=rng.randint(3, 9)))
        inputs.append("sentence: " + " ".join(words))
        targets.append("yes" if "red" in words else "no")
    return inputs, targets


def _dataset_fn(split, shuffle_files, seed=None, sizes=None, data_seed=0):
    import tensorflow as tf

    del shuffle_files, seed
    inputs, targets = _examples(split, sizes[split], data_seed)
    return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})


def _accuracy(targets, predictions):
    import numpy as np

    return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def register_task(vocab_path: str, train_size: int, validation_size: int, seed: int) -> str:
    import seqio

    if TASK_NAME in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(TASK_NAME)
    vocab = seqio.SentencePieceVocabulary(vocab_path, extra_ids=100)
    features = {"inputs": seqio.Feature(vocab, add_eos=True),
                "targets": seqio.Feature(vocab, add_eos=True)}
    seqio.TaskRegistry.add(
        TASK_NAME,
        source=seqio.FunctionDataSource(
            functools.partial(_dataset_fn, sizes={"train": train_size,
                                                  "validation": validation_size},
                              data_seed=seed),
            splits=("train", "validation")),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features=features, metric_fns=[_accuracy])
    return TASK_NAME


# ------------------------------------------------------------------------------ helpers
def make_candidates(m: int, k: int, count: int, seed: int):
    """C random candidates; candidate i prunes r_i = 0.9 (i+1)/C of the tokens, then r_i of
    the surviving pieces (the library's pruning functions with random scores)."""
    import numpy as np

    from xprompt_jax.xprompt import pruning

    rng = np.random.RandomState(seed + 17)
    ones_t, ones_p = np.ones(m, np.float32), np.ones((m, k), np.float32)
    candidates, ratios = [], []
    for i in range(count):
        ratio = round(0.9 * (i + 1) / count, 6)
        token_mask = pruning.prune_tokens(rng.rand(m), ones_t, ratio)
        base = int(pruning.effective_piece_mask(token_mask, ones_p).sum())
        piece_mask = ones_p
        if int(round(ratio * base)) < base:
            piece_mask = pruning.prune_pieces(rng.rand(m, k), ones_p, token_mask, ratio, base)
        candidates.append((token_mask, piece_mask))
        ratios.append(ratio)
    return candidates, ratios


def recording_evaluator_class():
    """`Evaluator` that can record each evaluation's raw rank scores and predicted texts
    (`predict`'s output, per variant): both the batched and the sequential paths go
    through it, so their full outputs can be compared."""
    import numpy as np

    from xprompt_jax.evaluation import Evaluator

    class RecordingEvaluator(Evaluator):
        recording = False

        def start_recording(self):
            self.recording, self.scores, self.texts = True, [], []

        def stop_recording(self):
            self.recording = False
            return self.scores, self.texts

        def predict(self, *args, **kwargs):
            predictions = super().predict(*args, **kwargs)
            if self.recording:
                for v, texts in enumerate(predictions.texts):
                    if predictions.scores is not None:
                        self.scores.append(np.concatenate(predictions.scores[v]).astype(
                            np.float64))
                    self.texts.append(list(texts))
            return predictions

    return RecordingEvaluator


def _comparable(results):
    return [(r["metrics"], r["main_metric"], r["predictions_sample"]) for r in results]


def _median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b))


def _check_mark():
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    try:
        "✓✗".encode(encoding or "ascii")
        return "✓", "✗"
    except (LookupError, UnicodeEncodeError):
        return "ok", "DIFF"


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    threads = _set_threads(args.threads)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from xprompt_jax.models import PromptedT5, T5Config
    from xprompt_jax.training import optimizers, partitioning
    from xprompt_jax.training.data import DataConfig, TrainBatchIterator
    from xprompt_jax.evaluation import EvalConfig
    from xprompt_jax.training.trainer import Trainer, TrainerConfig
    from xprompt_jax.xprompt import ImportanceScorer, MaskedSoftPrompt, search

    t_setup = time.perf_counter()
    m, k = args.prompt_length, args.num_pieces
    feature_lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    num_batches = math.ceil(args.score_examples / args.batch_size)
    num_score_examples = num_batches * args.batch_size
    task = register_task(args.vocab, train_size=max(num_score_examples, 64),
                         validation_size=args.eval_examples, seed=args.seed)

    cfg = T5Config(vocab_size=args.vocab_size, emb_dim=args.emb_dim, num_heads=args.num_heads,
                   head_dim=args.head_dim, mlp_dim=args.mlp_dim,
                   num_encoder_layers=args.layers, num_decoder_layers=args.layers,
                   mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                   dropout_rate=args.dropout)
    model = PromptedT5(cfg, prompt=MaskedSoftPrompt(length=m, num_pieces=k,
                                                    token_prune_mode=args.token_prune_mode))
    data_config = DataConfig(task, feature_lengths, args.batch_size, seed=args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="xprompt_search_bench_")
    trainer = Trainer(model, optimizers.adafactor(), data_config,
                      TrainerConfig(model_dir=tmp.name, num_steps=1, eval_period=None,
                                    progress=False, seed=args.seed))
    mesh, rules = trainer.mesh, trainer.rules
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731
    # Own buffers: the train step donates trainer.state, which must not invalidate these.
    variables = copy(trainer.variables())
    trainable = copy(trainer.state.params)

    # Search variants: (mode, how); how -> (dev rows per chunk, batched?).
    hows = {"batched": (args.eval_batch_size, True),
            "sequential": (args.eval_batch_size, False)}
    if args.batched_eval_batch_size:
        hows["batched_small"] = (args.batched_eval_batch_size, True)
    RecordingEvaluator = recording_evaluator_class()
    evaluators = {}
    for mode in args.modes:
        for rows in sorted({r for r, _ in hows.values()}):
            evaluators[mode, rows] = RecordingEvaluator(
                model, task, feature_lengths,
                EvalConfig(mode=mode, batch_size=rows, max_examples=args.eval_examples),
                label_strings_fn=lambda ex: ["yes", "no"],
                main_metric_fn=lambda metrics: metrics["accuracy"])
    candidates, ratios = make_candidates(m, k, args.num_candidates, args.seed)
    kept = [{"tokens": int(t.sum()),
             "pieces": int(((p > 0) & (t[:, None] > 0)).sum())} for t, p in candidates]

    # The same N examples for scoring and training, read once (data loading not timed).
    iterator = TrainBatchIterator(data_config)
    batches = [next(iterator) for _ in range(num_batches)]
    del iterator
    scorers = {"score_per_example": ImportanceScorer(model, trainable, trainer.frozen,
                                                     trainer.batch_sharding, per_example=True),
               "score_batch_grad": ImportanceScorer(model, trainable, trainer.frozen,
                                                    trainer.batch_sharding, per_example=False)}
    ones_t, ones_p = np.ones(m, np.float32), np.ones((m, k), np.float32)
    setup_s = time.perf_counter() - t_setup

    def evaluator_of(name):
        mode, how = name.split("/")
        return evaluators[mode, hows[how][0]]

    def run_train():
        metrics = None
        for batch in batches:
            trainer.state, metrics = trainer._step(trainer.state, trainer.frozen,
                                                   trainer._global_batch(batch),
                                                   trainer.dropout_rng)
        jax.block_until_ready((trainer.state, metrics))
        return metrics

    def run(name):
        if "/" in name:
            return search.evaluate_candidates(evaluator_of(name), variables, candidates,
                                              batched=hows[name.split("/")[1]][1])
        if name == "train_step":
            return run_train()
        return scorers[name].score(ones_t, ones_p, iter(batches), num_score_examples)

    def timed(name):
        """(wall s, process CPU s, output): CPU time counts every thread of this process,
        so it is less sensitive than wall time to other processes on a shared machine."""
        c0, t0 = time.process_time(), time.perf_counter()
        out = run(name)
        return time.perf_counter() - t0, time.process_time() - c0, out

    names = [f"{mode}/{how}" for mode in args.modes for how in hows] + list(SCORE_VARIANTS)

    # ---- warm-up (compilation): first call of every variant, not in the statistics
    first_call, reference, recorded = {}, {}, {}
    with partitioning.activate(mesh, rules):
        for name in names:
            if "/" in name:
                evaluator_of(name).start_recording()
            first_call[name], _, reference[name] = timed(name)
            if "/" in name:
                recorded[name] = evaluator_of(name).stop_recording()
            print(f"first call {name}: {first_call[name]:.2f} s", flush=True)

    outputs_check, per_candidate = {}, {}
    for name in names:
        if "/" not in name or name.endswith("/sequential"):
            continue
        mode = name.split("/")[0]
        b, s = reference[name], reference[f"{mode}/sequential"]
        (b_scores, b_texts), (s_scores, s_texts) = recorded[name], recorded[f"{mode}/sequential"]
        check = {"metrics_identical": _comparable(b) == _comparable(s),
                 "predictions_identical": b_texts == s_texts,
                 "distinct_predictions_over_candidates": len({tuple(t) for t in s_texts})}
        if mode == "rank_classification":
            diffs = [float(np.max(np.abs(x - y))) for x, y in zip(b_scores, s_scores)]
            check.update({
                "scores_bitwise_equal": all(np.array_equal(x, y)
                                            for x, y in zip(b_scores, s_scores)),
                "max_abs_score_diff": max(diffs) if diffs else None,
                "distinct_score_vectors_over_candidates": len({x.tobytes() for x in s_scores}),
            })
        check["identical"] = check["metrics_identical"] and check["predictions_identical"]
        outputs_check[name] = check
        per_candidate[name] = [{"ratio": r, **kc, "main_metric": rb["main_metric"],
                                "sequential_main_metric": rs["main_metric"],
                                "same": _comparable([rb]) == _comparable([rs])}
                               for r, kc, rb, rs in zip(ratios, kept, b, s)]
    score_pe, score_bg = reference["score_per_example"], reference["score_batch_grad"]

    # ---- timed rounds (the order rotates every round)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    stable = True
    t_timed = time.perf_counter()
    with partitioning.activate(mesh, rules):
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                dt, dc, out = timed(name)
                wall[name].append(dt)
                cpu[name].append(dc)
                if "/" in name:
                    stable &= _comparable(out) == _comparable(reference[name])
            print(f"round {r + 1}/{args.rounds} (wall ms): " +
                  ", ".join(f"{n} {wall[n][-1] * 1e3:.0f}" for n in names), flush=True)
    timed_s = time.perf_counter() - t_timed

    pairs = {}
    for mode, suffix in (("rank_classification", "rank"), ("generation", "generation")):
        pairs[f"batched_over_sequential_{suffix}"] = (f"{mode}/batched", f"{mode}/sequential")
        if "batched_small" in hows:
            pairs[f"batched_small_over_sequential_{suffix}"] = (f"{mode}/batched_small",
                                                                f"{mode}/sequential")
    pairs["scoring_over_train_step_per_example"] = ("score_per_example", "train_step")
    pairs["scoring_over_train_step_batch_grad"] = ("score_batch_grad", "train_step")
    results, min_ratios, cpu_ratios, per_round_ratios = {}, {}, {}, {}
    for key, (a, b) in pairs.items():
        if a not in wall or b not in wall:
            results[key] = None
            continue
        results[key] = _median_ratio(wall[a], wall[b])
        min_ratios[key] = min(wall[a]) / min(wall[b])
        cpu_ratios[key] = _median_ratio(cpu[a], cpu[b])
        per_round_ratios[key] = [x / y for x, y in zip(wall[a], wall[b])]

    variants = {}
    for name in names:
        med = statistics.median(wall[name])
        variants[name] = {"median_s": med, "min_s": min(wall[name]),
                          "per_round_s": wall[name],
                          "cpu_median_s": statistics.median(cpu[name]),
                          "cpu_per_round_s": cpu[name],
                          "first_call_s": first_call[name],
                          "compile_est_s": max(0.0, first_call[name] - med)}
        if "/" in name:
            ev = evaluator_of(name)
            rows = (len(ev.rank_rows()[0]) if ev.config.mode == "rank_classification"
                    else len(ev.examples))
            chunks = math.ceil(rows / ev.config.batch_size)
            batched = hows[name.split("/")[1]][1]
            variants[name].update({
                "per_candidate_ms": med * 1e3 / args.num_candidates,
                "device_calls_per_search": chunks if batched else chunks * args.num_candidates,
                "rows_per_device_call": ev.config.batch_size * (args.num_candidates
                                                                if batched else 1)})
        else:
            variants[name]["per_example_ms"] = med * 1e3 / num_score_examples

    import flax
    import optax

    environment = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": bench_env.cpu_model(),
        "jax": jax.__version__,
        "jaxlib": bench_env.pkg_version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "seqio": bench_env.pkg_version("seqio"),
        "tensorflow": bench_env.pkg_version("tensorflow") or bench_env.pkg_version("tensorflow-cpu"),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "cpus_available": threads,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    report = {
        **results,
        "metrics_identical": {n: c["identical"] for n, c in outputs_check.items()},
        "metrics_identical_all_rounds": stable,
        "outputs_check": outputs_check,
        "min_ratios": min_ratios,
        "cpu_time_ratios": cpu_ratios,
        "per_round_ratios": per_round_ratios,
        "variants": variants,
        "candidates": per_candidate,
        "importance_scores_check": {
            "per_example_token_mean": float(np.mean(score_pe.token)),
            "batch_grad_token_mean": float(np.mean(score_bg.token)),
            # |mean of gradients| <= mean of |gradients| (triangle inequality)
            "batch_grad_le_per_example": bool(np.all(score_bg.token <= score_pe.token + 1e-6)
                                              and np.all(score_bg.piece <= score_pe.piece
                                                         + 1e-6)),
            "num_examples": score_pe.num_examples,
        },
        "num_params": {"trainable": trainer.num_trainable, "frozen": trainer.num_frozen},
        "config": {k_: v for k_, v in vars(args).items() if k_ != "json"},
        "settings": {
            "model": "T5.1.1-style (gated-gelu, untied logits_dense), random init, float32",
            "num_score_examples": num_score_examples, "num_score_batches": num_batches,
            "candidate_ratios": ratios,
            "timing": "one untimed first call per variant (compile + warm-up); then median / "
                      "min over rounds of wall time; ratios = median of per-round ratios; "
                      "cpu_time_ratios: the same with process CPU time (all threads)",
            "search_timing": "end to end evaluate_candidates: features, device calls, "
                             "text decoding, metrics",
            "generation_note": "greedy decoding stops when every row of the call emitted EOS "
                               "(batched: all C candidates' rows; sequential: one "
                               "candidate's rows)",
            "train_step": "Trainer._step (jitted, donated state; forward + backward w.r.t. "
                          "the prompt + Adafactor update), dropout " + str(args.dropout),
            "rank_logits_bytes_per_call": {
                n: v["rows_per_device_call"] * args.targets_length * args.vocab_size * 4
                for n, v in variants.items() if n.startswith("rank_classification/")},
        },
        "environment": environment,
        "setup_s": setup_s,
        "timed_s": timed_s,
    }
    _print_table(report, args, names, num_score_examples, num_batches)
    tmp.cleanup()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def _print_table(report, args, names, num_score_examples, num_batches):
    v = report["variants"]
    env = report["environment"]
    yes, no = _check_mark()
    print()
    load = (f", load {env['loadavg_start'][0]:.1f} -> {env['loadavg_end'][0]:.1f}"
            if env["loadavg_start"] and env["loadavg_end"] else "")
    print(f"T5.1.1-style d={args.emb_dim}, {args.layers}+{args.layers} layers, vocab "
          f"{args.vocab_size}, inputs {args.inputs_length} -> targets {args.targets_length}; "
          f"prompt m={args.prompt_length}, k={args.num_pieces}; {args.rounds} rounds; "
          f"{env['jax_backend']} x{len(env['jax_devices'])}, {env['cpus_available']} CPUs"
          f"{load}")
    print(f"\nCandidate search: C={args.num_candidates} candidates, {args.eval_examples} dev "
          f"examples; sequential = {args.num_candidates} x Evaluator.evaluate")
    header = (f"{'mode/variant':<34}{'median s':>9}{'min s':>8}{'/seq':>7}{'(min)':>7}"
              f"{'(cpu)':>7}{'calls':>7}{'rows/call':>10}{'1st call s':>11}{'same':>6}")
    print(header)
    print("-" * len(header))
    for name in names:
        if "/" not in name:
            continue
        mode, how = name.split("/")
        row = v[name]
        suffix = "rank" if mode == "rank_classification" else "generation"
        key = None if how == "sequential" else f"{how}_over_sequential_{suffix}"
        ratio = "" if key is None else f"{report[key]:.3f}"
        mr = "" if key is None else f"{report['min_ratios'][key]:.2f}"
        cr = "" if key is None else f"{report['cpu_time_ratios'][key]:.2f}"
        same = "" if key is None else (yes if report["metrics_identical"][name] else no)
        print(f"{name:<34}{row['median_s']:>9.3f}{row['min_s']:>8.3f}{ratio:>7}{mr:>7}{cr:>7}"
              f"{row['device_calls_per_search']:>7}{row['rows_per_device_call']:>10}"
              f"{row['first_call_s']:>11.1f}{same:>6}")
    for name, check in report["outputs_check"].items():
        extra = ""
        if "max_abs_score_diff" in check:
            extra = (f"; scores bitwise equal {check['scores_bitwise_equal']} (max |diff| "
                     f"{check['max_abs_score_diff']:.2g}), distinct score vectors "
                     f"{check['distinct_score_vectors_over_candidates']}")
        print(f"  {name}: predictions identical {check['predictions_identical']}, distinct "
              f"prediction lists over candidates "
              f"{check['distinct_predictions_over_candidates']}{extra}")
    print(f"\nImportance scoring vs train step: N={num_score_examples} examples "
          f"({num_batches} batches of {args.batch_size})")
    header = (f"{'variant':<34}{'median s':>9}{'min s':>8}{'/train':>7}{'(min)':>7}"
              f"{'(cpu)':>7}{'ms/example':>11}{'1st call s':>11}")
    print(header)
    print("-" * len(header))
    for name, key in (("train_step", None),
                      ("score_per_example", "scoring_over_train_step_per_example"),
                      ("score_batch_grad", "scoring_over_train_step_batch_grad")):
        row = v[name]
        ratio = "" if key is None else f"{report[key]:.3f}"
        mr = "" if key is None else f"{report['min_ratios'][key]:.2f}"
        cr = "" if key is None else f"{report['cpu_time_ratios'][key]:.2f}"
        print(f"{name:<34}{row['median_s']:>9.3f}{row['min_s']:>8.3f}{ratio:>7}{mr:>7}{cr:>7}"
              f"{row['per_example_ms']:>11.2f}{row['first_call_s']:>11.1f}")
    print("\n/seq, /train: median of per-round wall-time ratios; (min): fastest / fastest; "
          "(cpu): the same ratio of process CPU time; calls: compiled device calls per "
          "search; 1st call: compile + first run; same: metrics and all predictions of the "
          "two paths identical")
    print()
    for key in ("batched_over_sequential_rank", "batched_over_sequential_generation",
                "batched_small_over_sequential_rank", "batched_small_over_sequential_generation",
                "scoring_over_train_step_per_example", "scoring_over_train_step_batch_grad"):
        if key not in report:
            continue
        val = report[key]
        print(f"{key:<42}{'-' if val is None else f'{val:.3f}'}")
    if not all(report["metrics_identical"].values()) or not report[
            "metrics_identical_all_rounds"]:
        print("WARNING: batched and sequential candidate results differ (see 'outputs_check')")


if __name__ == "__main__":
    main(sys.argv[1:])
