#!/usr/bin/env python
"""Many prompts in one batch: throughput of PromptBank batches mixing N prompts
against single-prompt batches, and the faithful XPrompt search's retraining of every
candidate jointly against one candidate after another. One process, one model: the world's
tiny T5.1.1 shape (d=128, 3+2 layers, vocabulary 768; random frozen weights: speed does
not depend on them), inputs 48 tokens, targets 4, batch `--batch` rows, prompt length 20.

1. Training, N in {1, 4, 16}: the same N*B examples (a) in N batches of B rows, each row
   with its own prompt id (ids mixed in every batch; a bank of N `SoftPrompt`s, per-prompt
   Adafactor) against (b) one prompt at a time: N single-prompt models' batches of B rows
   (a `SoftPrompt` model, one jitted step, N train states). Ratio (a)/(b) of examples/s:
   `mixed_over_single_train[N]` (1.0 = the gather of prompts costs nothing).
2. Inference (forward + target log-probs, as rank classification scores): the same, as
   `mixed_over_single_infer[N]`.
3. The faithful XPrompt search (REWIND_EACH_CANDIDATE): C = `--candidates` candidates of a
   level, each a `MaskedSoftPrompt` with its own masks, retrained `--search_steps` steps on
   batches of B examples and scored on `--dev` examples: jointly (one bank of C, every
   batch tiled C times: `B*C` rows a step, one dev pass of `dev*C` rows) against
   sequentially (C runs of B rows a step, C dev passes). `joint_over_sequential_search` =
   joint / sequential wall time (< 1: joint is faster). Compilation is excluded for both
   (one warm-up each).

Timing: every variant runs once untimed (compilation), then `--rounds` interleaved rounds
of `--steps` steps; medians of per-round ratios are reported.

    python bench/multi_prompt.py --json /tmp/multi_prompt.json
    python bench/multi_prompt.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from xprompt_jax.models import PromptedT5, T5Config  # noqa: E402
from xprompt_jax.prompts import SoftPrompt  # noqa: E402
from xprompt_jax.prompts.bank import PromptBank, tile_for_prompts, with_prompt_ids  # noqa: E402
from xprompt_jax.training import optimizers  # noqa: E402
from xprompt_jax.training.bank_training import BankBatches, per_prompt_optimizer  # noqa: E402
from per_row import row_scores  # noqa: E402  (bench/)
from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step  # noqa: E402
from xprompt_jax.xprompt.masked_prompt import MaskedSoftPrompt  # noqa: E402

CFG = dict(vocab_size=768, emb_dim=128, num_heads=8, head_dim=16, mlp_dim=256,
           num_encoder_layers=3, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
           dropout_rate=0.0, logits_via_embedding=False, relative_attention_num_buckets=32,
           relative_attention_max_distance=128)
S, T, M = 48, 4, 20


def batch(rows, seed):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 700, (rows, S)).astype(np.int32)
    tgt = rng.randint(2, 700, (rows, T)).astype(np.int32)
    dec = np.concatenate([np.zeros((rows, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones((rows, T), np.float32)}


def adafactor():
    return optimizers.adafactor(learning_rate=0.3, decay_rate=0.8,
                                multiply_by_parameter_scale=False, weight_decay_rate=1e-5,
                                clipping_threshold=1.0)


def frozen_params(b):
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(M))
    v = jax.jit(lambda r: single.init(r, b["encoder_input_tokens"], b["decoder_input_tokens"],
                                      b["decoder_target_tokens"], enable_dropout=False))(
        jax.random.PRNGKey(0))
    return {"params": {k: x for k, x in v["params"].items() if k != "prompt"}}


def block(tree):
    jax.tree_util.tree_map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready")
                           else x, tree)


def timed(fn, rounds):
    fn()  # compile
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def train_pair(n, b, steps, frozen, rng):
    tx = adafactor()
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(M))
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(SoftPrompt(M), num_prompts=n))
    step_s = jax.jit(make_train_step(single, tx, LossConfig(), enable_dropout=False))
    ptx = per_prompt_optimizer(tx)
    step_b = jax.jit(make_train_step(bank, ptx, LossConfig(normalization="sum"),
                                     enable_dropout=False))
    inits = rng.uniform(-0.5, 0.5, (n, M, 128)).astype(np.float32)
    data = [batch(b, 100 + i) for i in range(n)]  # N*B examples
    transform = BankBatches(bank, "ids_in_data")
    ids = np.arange(n * b) % n  # mixed: every batch holds every prompt
    mixed = [transform(with_prompt_ids(d, np.roll(ids, i)[:b], 768, n))
             for i, d in enumerate(data)]
    singles = [TrainState.create({"prompt": {"prompt": jnp.asarray(x)}}, tx) for x in inits]
    state_b = [TrainState.create({"prompt": {"bank": {"prompt": jnp.asarray(inits)}}}, ptx)]
    key = jax.random.PRNGKey(1)

    def run_mixed():
        st = state_b[0]
        for _ in range(steps):
            for mb in mixed:
                st, m = step_b(st, frozen, mb, key)
        block(st)
        state_b[0] = st

    def run_single():
        for _ in range(steps):
            for i in range(n):
                singles[i], m = step_s(singles[i], frozen, data[i], key)
        block(singles)

    return run_mixed, run_single


def infer_pair(n, b, steps, frozen, rng):
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(M))
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(SoftPrompt(M), num_prompts=n))
    score_s = jax.jit(lambda v, f: row_scores(single, v, f))
    score_b = jax.jit(lambda v, f: row_scores(bank, v, f))
    inits = rng.uniform(-0.5, 0.5, (n, M, 128)).astype(np.float32)
    data = [batch(b, 200 + i) for i in range(n)]
    ids = np.arange(n * b) % n
    mixed = [with_prompt_ids(d, np.roll(ids, i)[:b], 768, n) for i, d in enumerate(data)]
    vs = [{"params": {**frozen["params"], "prompt": {"prompt": jnp.asarray(x)}}} for x in inits]
    vb = {"params": {**frozen["params"], "prompt": {"bank": {"prompt": jnp.asarray(inits)}}}}

    def run_mixed():
        for _ in range(steps):
            block([score_b(vb, mb) for mb in mixed])

    def run_single():
        for _ in range(steps):
            block([score_s(vs[i], data[i]) for i in range(n)])

    return run_mixed, run_single


def search_pair(c, b, steps, dev, frozen, rng):
    """Retrain C masked candidates `steps` steps + score them on `dev` examples."""
    tx = adafactor()
    inner = MaskedSoftPrompt(M, num_pieces=16, token_prune_mode="zero")
    single = PromptedT5(T5Config(**CFG), prompt=inner)
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(inner, num_prompts=c))
    stage1 = rng.uniform(-0.5, 0.5, (M, 128)).astype(np.float32)
    token_masks = np.ones((c, M), np.float32)
    for i in range(c):
        token_masks[i, : int(M * (i + 1) / (c + 1))] = 0.0  # ratio (i+1)/(c+1) pruned
    piece_masks = np.ones((c, M, 16), np.float32)
    step_s = jax.jit(make_train_step(single, tx, LossConfig(), enable_dropout=False))
    ptx = per_prompt_optimizer(tx)
    step_b = jax.jit(make_train_step(bank, ptx, LossConfig(normalization="sum"),
                                     enable_dropout=False))
    score_s = jax.jit(lambda v, f: row_scores(single, v, f))
    score_b = jax.jit(lambda v, f: row_scores(bank, v, f))
    data = [batch(b, 300 + i) for i in range(steps)]
    dev_batch = batch(dev, 999)
    transform = BankBatches(bank, "ensemble")
    tiled = [transform(d) for d in data]
    dev_tiled = tile_for_prompts(dev_batch, range(c), 768, c)
    masks_s = [{"prompt_masks": {"prompt": {"token_mask": jnp.asarray(token_masks[i]),
                                            "piece_mask": jnp.asarray(piece_masks[i])}}}
               for i in range(c)]
    masks_b = {"prompt_masks": {"prompt": {"bank": {"token_mask": jnp.asarray(token_masks),
                                                    "piece_mask": jnp.asarray(piece_masks)}}}}
    key = jax.random.PRNGKey(1)

    def run_joint():
        st = TrainState.create({"prompt": {"bank": {"prompt": jnp.asarray(
            np.broadcast_to(stage1, (c, M, 128)))}}}, ptx)
        fz = {**frozen, **masks_b}
        for tb in tiled:
            st, _ = step_b(st, fz, tb, key)
        block(score_b({**fz, "params": {**frozen["params"], **st.params}}, dev_tiled))

    def run_sequential():
        for i in range(c):
            st = TrainState.create({"prompt": {"prompt": jnp.asarray(stage1)}}, tx)
            fz = {**frozen, **masks_s[i]}
            for d in data:
                st, _ = step_s(st, fz, d, key)
            block(score_s({**fz, "params": {**frozen["params"], **st.params}}, dev_batch))

    return run_joint, run_sequential


def ratio_rounds(fa, fb, rounds):
    fa(), fb()  # compile both
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter(); fa(); ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); fb(); tb.append(time.perf_counter() - t0)
    return ta, tb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=9)
    ap.add_argument("--search_steps", type=int, default=10)
    ap.add_argument("--dev", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.ns, args.rounds, args.steps, args.candidates, args.search_steps = [1, 4], 2, 1, 3, 3
    rng = np.random.RandomState(0)
    frozen = frozen_params(batch(2, 0))
    out = {"config": vars(args), "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
           "load_avg": os.getloadavg()[0], "train": {}, "infer": {},
           "mixed_over_single_train": {}, "mixed_over_single_infer": {}}
    rows = []
    for kind, make in (("train", train_pair), ("infer", infer_pair)):
        for n in args.ns:
            fa, fb = make(n, args.batch, args.steps, frozen, rng)
            ta, tb = ratio_rounds(fa, fb, args.rounds)
            examples = n * args.batch * args.steps
            ratio = statistics.median([b_ / a_ for a_, b_ in zip(ta, tb)])  # throughput a/b
            out[kind][str(n)] = {"mixed_examples_per_s": examples / statistics.median(ta),
                                 "single_examples_per_s": examples / statistics.median(tb),
                                 "mixed_over_single": ratio}
            out[f"mixed_over_single_{kind}"][str(n)] = ratio
            rows.append((kind, n, examples / statistics.median(ta),
                         examples / statistics.median(tb), ratio))
            print(f"{kind:5s} N={n:2d}: mixed {rows[-1][2]:8.1f} ex/s  single {rows[-1][3]:8.1f}"
                  f" ex/s  mixed/single {ratio:.3f}", flush=True)
    fa, fb = search_pair(args.candidates, args.batch, args.search_steps, args.dev, frozen, rng)
    ta, tb = ratio_rounds(fa, fb, args.rounds)
    search_ratio = statistics.median([a_ / b_ for a_, b_ in zip(ta, tb)])
    out["search"] = {"candidates": args.candidates, "steps": args.search_steps,
                     "joint_s": statistics.median(ta), "sequential_s": statistics.median(tb)}
    out["joint_over_sequential_search"] = search_ratio
    print()
    print("| what | N | mixed ex/s | single ex/s | mixed / single |")
    print("|---|---|---|---|---|")
    for kind, n, a, b, r in rows:
        print(f"| {kind} | {n} | {a:.1f} | {b:.1f} | {r:.3f} |")
    print(f"\nXPrompt faithful search, {args.candidates} candidates x {args.search_steps} steps "
          f"+ dev scoring: joint {out['search']['joint_s']:.2f} s, sequential "
          f"{out['search']['sequential_s']:.2f} s, joint/sequential {search_ratio:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
