#!/usr/bin/env python
"""Step time of our prompt-tuning train step against the alternatives, in one process.

Variants, all on the same randomly initialised T5.1.1-style model (gated GELU, logits
without rescaling through `decoder/logits_dense`), the same batch, the same prompt values
and float32:

- `ours`: `make_train_step` + `jit_train_step` as `Trainer` builds them: only the prompt is
  differentiated and has optimizer state; the frozen T5 is a plain argument; the train
  state is donated.
- `finetune`: the same step with every weight trainable (all weights differentiated and
  updated, Adafactor state for all): what prompt tuning exists to avoid.
- `t5x_style`: T5X / google-research/prompt-tuning's way: `value_and_grad` over *all*
  params inside the jit, the frozen ones discarded by the optimizer
  (`optax.multi_transform` with `set_to_zero` for them, like T5X's MultiOptimizer); the
  whole parameter tree is in the donated train state. The unused gradients may be
  dead-code-eliminated; compiled FLOP counts (and dot_general counts traced vs lowered)
  show whether, and whether JAX or XLA did it.
- `peft`: HF PEFT prompt tuning in PyTorch (CPU, eager): `get_peft_model(
  T5ForConditionalGeneration, PromptTuningConfig(SEQ_2_SEQ_LM, num_virtual_tokens=m,
  num_transformer_submodules=1))` (encoder prompt only) with the same weights, `loss.backward()` and a step of transformers' Adafactor (or
  torch AdamW) on the prompt; `torch.set_num_threads` = the CPUs JAX uses.
- `forward_gather`, `forward_one_hot`: jitted forward pass (loss, no gradient) with
  `T5Config.embedding_lookup='gather'` vs T5X's one-hot matmul lookup.

The HF model is built first (transformers' own T5 init; transformers 5 ties a fresh
model's `lm_head` to `shared` - frozen either way) and loaded into ours with
`load_hf_params`, so the weights are identical; the first-step losses of the four train
steps are compared as a check. Dropout: `--dropout` (default 0.0) in every variant.

Timing: compile / warm up first (not timed); then `--rounds` rounds; in each round every
variant runs `--steps_per_round` steps back to back (JAX: `jax.block_until_ready` after the
last one) and the mean step time is recorded. The variant order rotates from round to
round so that machine noise affects all variants alike, with a short pause between
variants (`--pause_s`) so that one runtime's spinning worker threads do not slow the next.
Reported: per-variant median / min step time (ms), the median over rounds of the per-round
ratios (`ours_over_X` = ours time / X time; < 1 means ours is faster), compiled FLOPs of
the JAX variants (`cost_analysis()['flops']`, also before XLA's optimisation passes) and a
torch FLOP count of the PEFT step (matmul-like ops only).

    python bench/train_step.py --quick                     # smoke run, < 1 min
    python bench/train_step.py --json /tmp/train_step.json  # defaults: a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import bench_env  # bench/ (the script's directory) is on sys.path

QUICK_DEFAULTS = dict(emb_dim=32, num_layers=2, num_heads=2, head_dim=16, mlp_dim=64,
                      vocab_size=512, batch=4, inputs_length=32, targets_length=8,
                      prompt_length=5, rounds=3, steps_per_round=2, warmup_steps=1, pause_s=0.0)

TRAIN_VARIANTS = ("ours", "finetune", "t5x_style", "peft")
FORWARD_VARIANTS = ("forward_gather", "forward_one_hot")
ALL_VARIANTS = TRAIN_VARIANTS + FORWARD_VARIANTS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--emb_dim", type=int, default=256)
    p.add_argument("--num_layers", type=int, default=4, help="encoder and decoder layers each")
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--mlp_dim", type=int, default=1024)
    p.add_argument("--vocab_size", type=int, default=32128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs_length", type=int, default=128)
    p.add_argument("--targets_length", type=int, default=32)
    p.add_argument("--prompt_length", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps_per_round", type=int, default=5)
    p.add_argument("--warmup_steps", type=int, default=2,
                   help="untimed steps per variant after compilation")
    p.add_argument("--pause_s", type=float, default=0.1,
                   help="sleep between variants (lets idle worker threads stop spinning)")
    p.add_argument("--optimizer", choices=("adafactor", "adamw"), default="adafactor",
                   help="adafactor: ours = optimizers.adafactor() (Lester et al.), PEFT = "
                        "transformers Adafactor with the same settings; adamw: optax / torch")
    p.add_argument("--learning_rate", type=float, default=0.3)
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate in all variants")
    p.add_argument("--threads", type=int, default=None,
                   help="CPUs for JAX and torch (restricts the process affinity before JAX "
                        "starts); default: all CPUs this process may run on")
    p.add_argument("--variants", default=",".join(ALL_VARIANTS),
                   help="comma-separated subset of " + ",".join(ALL_VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke run (explicit flags still win)")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**QUICK_DEFAULTS)
        args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(ALL_VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(ALL_VARIANTS)}")
    if "ours" not in args.variants:
        p.error("the 'ours' variant is required (every ratio is relative to it)")
    return args


def _set_threads(requested):
    """Restricts the CPU affinity before JAX / torch start; returns the thread count."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    if requested is not None and 0 < requested < len(cpus):
        cpus = cpus[:requested]
        os.sched_setaffinity(0, cpus)
    return len(cpus)


# ------------------------------------------------------------------------------ setup
def build_batch(args, np):
    rng = np.random.RandomState(args.seed)
    b, s, t = args.batch, args.inputs_length, args.targets_length
    enc = rng.randint(2, args.vocab_size, (b, s)).astype(np.int32)
    tgt = rng.randint(2, args.vocab_size, (b, t)).astype(np.int32)
    # Some padding (3/4 to full length), identical for every variant.
    for row in range(b):
        enc[row, rng.randint(max(1, 3 * s // 4), s + 1):] = 0
        tgt[row, rng.randint(max(1, 3 * t // 4), t + 1):] = 0
    dec_in = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt}


def build_hf_model(args):
    import torch
    import transformers

    torch.manual_seed(args.seed)
    hf_config = transformers.T5Config(
        vocab_size=args.vocab_size, d_model=args.emb_dim, d_kv=args.head_dim,
        num_heads=args.num_heads, d_ff=args.mlp_dim, num_layers=args.num_layers,
        num_decoder_layers=args.num_layers, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=args.dropout,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(hf_config).float()
    return hf_config, model


def flops_of(stage):
    """`cost_analysis()['flops']` of a Lowered / Compiled (dict or [dict] by JAX version)."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend / version implements it
        return None, None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None, None
    flops = cost.get("flops")
    nbytes = cost.get("bytes accessed")
    return (None if flops is None else float(flops)), (None if nbytes is None else float(nbytes))


class JaxStep:
    """A compiled, donated JAX train step (or forward pass) with its live arguments."""

    def __init__(self, name, jitted, state, const_args, is_train=True):
        import jax

        self.name = name
        self.is_train = is_train
        self.state = state
        self.const_args = const_args
        # dot_general count in the traced program vs in what JAX hands to XLA (JAX drops
        # dead code, e.g. unused gradients, while lowering).
        self.dots_traced = str(jax.make_jaxpr(jitted)(state, *const_args)).count("dot_general")
        t0 = time.perf_counter()
        lowered = jitted.lower(state, *const_args)
        self.flops_lowered, _ = flops_of(lowered)
        self.dots_lowered = lowered.as_text().count("stablehlo.dot_general")
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.flops, self.bytes_accessed = flops_of(self.compiled)
        self.last = None
        self._jax = jax

    def run(self, n):
        out = None
        for _ in range(n):
            if self.is_train:
                self.state, out = self.compiled(self.state, *self.const_args)
            else:
                out = self.compiled(self.state, *self.const_args)
        self._jax.block_until_ready((self.state, out))
        self.last = out
        return out

    def loss(self, out):
        return float(out["loss"]) if self.is_train else float(out[0] / out[1])


class PeftStep:
    """HF PEFT prompt tuning step in PyTorch eager mode."""

    def __init__(self, args, hf_model, prompt, batch, np):
        import peft
        import torch

        self.torch = torch
        self.model = peft.get_peft_model(
            hf_model, peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM",
                                              num_virtual_tokens=args.prompt_length,
                                              # encoder prompt only (Lester et al.; PEFT's
                                              # seq2seq default allocates 2m rows, of which
                                              # prompt tuning uses the first m)
                                              num_transformer_submodules=1))
        embedding = self.model.prompt_encoder["default"].embedding
        with torch.no_grad():
            embedding.weight.copy_(torch.from_numpy(np.asarray(prompt)))
        self.model.train()  # dropout follows the config (--dropout)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.num_trainable = int(sum(p.numel() for p in trainable))
        if args.optimizer == "adafactor":
            from transformers.optimization import Adafactor

            # The settings of optimizers.adafactor(): constant lr, decay -0.8, update clip 1,
            # weight decay 1e-5, no momentum, no parameter scaling.
            self.optimizer = Adafactor(trainable, lr=args.learning_rate, eps=(1e-30, 1e-3),
                                       clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                                       weight_decay=1e-5, scale_parameter=False,
                                       relative_step=False, warmup_init=False)
        else:
            self.optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate,
                                               betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        enc = batch["encoder_input_tokens"]
        tgt = batch["decoder_target_tokens"]
        self.inputs = dict(input_ids=torch.from_numpy(enc.astype(np.int64)),
                           attention_mask=torch.from_numpy((enc > 0).astype(np.int64)),
                           labels=torch.from_numpy(np.where(tgt > 0, tgt, -100).astype(np.int64)))
        self.flops = None
        self.compile_s = 0.0

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(**self.inputs)
        out.loss.backward()
        self.optimizer.step()
        return out.loss.detach()

    def run(self, n):
        loss = None
        for _ in range(n):
            loss = self.step()
        self.last = loss
        return loss

    def loss(self, out):
        return float(out)

    def count_flops(self):
        try:
            from torch.utils.flop_counter import FlopCounterMode
        except ImportError:
            return None
        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return float(counter.get_total_flops())


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    threads = _set_threads(args.threads)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    import numpy as np
    import torch

    torch.set_num_threads(threads)

    import jax
    import jax.numpy as jnp
    import optax

    from xprompt_jax.checkpoints import config_from_hf, load_hf_params
    from xprompt_jax.models import PromptedT5
    from xprompt_jax.prompts import SoftPrompt, initializers
    from xprompt_jax.training import optimizers, partitioning
    from xprompt_jax.training.params import count_params, flatten, split_params
    from xprompt_jax.training.train_step import (LossConfig, TrainState, batch_loss_sums,
                                                 jit_train_step, make_train_step)
    from xprompt_jax.training.frozen_model import init_variables

    t_setup = time.perf_counter()
    batch_np = build_batch(args, np)
    feature_lengths = {"inputs": args.inputs_length, "targets": args.targets_length}

    # The HF model first; ours gets its weights through load_hf_params.
    hf_config, hf_model = build_hf_model(args)
    state_dict = {k: v.detach().cpu().numpy().copy() for k, v in hf_model.state_dict().items()}
    params = load_hf_params(state_dict, config=hf_config)
    del state_dict
    cfg = config_from_hf(hf_config, dropout_rate=args.dropout, embedding_lookup="gather")
    prompt = np.random.RandomState(args.seed + 1).uniform(
        -0.5, 0.5, (args.prompt_length, args.emb_dim)).astype(np.float32)

    def prompted(config):
        return PromptedT5(config, prompt=SoftPrompt(args.prompt_length,
                                                    initializers.from_array(prompt)))

    model = prompted(cfg)
    model_one_hot = prompted(cfg.replace(embedding_lookup="one_hot"))

    if args.optimizer == "adafactor":
        make_tx = lambda: optimizers.adafactor(learning_rate=args.learning_rate)  # noqa: E731
    else:
        make_tx = lambda: optimizers.adamw(learning_rate=args.learning_rate)  # noqa: E731

    mesh = partitioning.make_mesh((-1, 1))
    rules = partitioning.standard_logical_axis_rules()
    rep = partitioning.replicated(mesh)
    batch_sh = partitioning.batch_sharding(mesh)
    loss_config = LossConfig()
    steps = {}
    num_params = {}

    def fresh(tree, shardings):
        # Own buffers per variant: donated states must never alias another variant's arrays.
        return jax.device_put(jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree),
                              shardings)

    def state_for(trainable, tr_sh, tx):
        state = TrainState.create(fresh(trainable, tr_sh), tx)
        state_sh = TrainState(step=rep, params=tr_sh,
                              opt_state=jax.tree_util.tree_map(lambda _: rep, state.opt_state))
        return jax.device_put(state, state_sh), state_sh

    def t5x_style_step(model, tx, trainable_regex_fn):
        """value_and_grad over every param; the optimizer discards the frozen gradients."""

        def step(state, frozen, batch, rng):
            del frozen
            rng = jax.random.fold_in(rng, state.step)

            def loss_fn(all_params):
                loss_sum, z_sum, weight_sum = batch_loss_sums(model, {"params": all_params},
                                                              batch, rng, loss_config, True)
                return loss_sum, (z_sum, weight_sum)

            (loss_sum, (z_sum, weight_sum)), grads = jax.value_and_grad(
                loss_fn, has_aux=True)(state.params)
            normalizer = loss_config.normalizer(weight_sum, batch["decoder_target_tokens"].shape[0])
            grads = jax.tree_util.tree_map(lambda g: g / normalizer, grads)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            # Metrics over the trainable leaves only (as ours), else no gradient could be
            # eliminated. (T5X's optional weight_metrics_computer would touch all of them.)
            tr = lambda tree: [v for k, v in flatten(tree).items() if trainable_regex_fn(k)]  # noqa: E731
            metrics = {"loss": loss_sum / normalizer, "z_loss": z_sum / normalizer,
                       "num_target_tokens": weight_sum,
                       "grad_norm": optax.global_norm(tr(grads)),
                       "trainable_norm": optax.global_norm(tr(params))}
            return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

        return step

    with partitioning.activate(mesh, rules):
        variables = init_variables(model, params, feature_lengths, jax.random.PRNGKey(args.seed))
        params_axes = variables.pop("params_axes", {})
        all_params = variables.pop("params")
        np.testing.assert_array_equal(np.asarray(all_params["prompt"]["prompt"]), prompt)
        batch = jax.device_put({k: jnp.asarray(v) for k, v in batch_np.items()}, batch_sh)
        rng = jax.device_put(jax.random.PRNGKey(args.seed), rep)
        all_sh = partitioning.param_shardings(all_params, params_axes, mesh, rules)

        # ours: the Trainer's construction.
        trainable, frozen = split_params(all_params)
        num_params["trainable"] = count_params(trainable)
        num_params["total"] = count_params(all_params)
        tr_sh = partitioning.param_shardings(trainable, params_axes, mesh, rules)
        fr_sh = partitioning.param_shardings(frozen, params_axes, mesh, rules)
        tx = make_tx()
        state, state_sh = state_for(trainable, tr_sh, tx)
        jitted = jit_train_step(make_train_step(model, tx, loss_config), state_sh,
                                {"params": fr_sh}, batch_sh, rep)
        steps["ours"] = JaxStep("ours", jitted, state,
                                ({"params": fresh(frozen, fr_sh)}, batch, rng))

        if "finetune" in args.variants:
            tx = make_tx()
            every, none = split_params(all_params, ".*")
            assert not none
            state, state_sh = state_for(every, all_sh, tx)
            jitted = jit_train_step(make_train_step(model, tx, loss_config), state_sh, {},
                                    batch_sh, rep)
            steps["finetune"] = JaxStep("finetune", jitted, state, ({}, batch, rng))

        if "t5x_style" in args.variants:
            import re

            pattern = re.compile(r".*prompt.*")
            is_trainable = lambda path: bool(pattern.fullmatch(path))  # noqa: E731
            labels = jax.tree_util.tree_map_with_path(
                lambda path, _: "trainable" if is_trainable(
                    "/".join(str(getattr(k, "key", k)) for k in path)) else "frozen",
                all_params)
            tx = optax.multi_transform({"trainable": make_tx(), "frozen": optax.set_to_zero()},
                                       labels)
            state, state_sh = state_for(all_params, all_sh, tx)
            jitted = jit_train_step(t5x_style_step(model, tx, is_trainable), state_sh, {},
                                    batch_sh, rep)
            steps["t5x_style"] = JaxStep("t5x_style", jitted, state, ({}, batch, rng))

        def forward(m):
            def fn(variables, batch):
                loss_sum, _, weight_sum = batch_loss_sums(m, variables, batch, None,
                                                          loss_config, enable_dropout=False)
                return loss_sum, weight_sum
            return jax.jit(fn)

        for name, m in (("forward_gather", model), ("forward_one_hot", model_one_hot)):
            if name in args.variants:
                steps[name] = JaxStep(name, forward(m), {"params": fresh(all_params, all_sh)},
                                      (batch,), is_train=False)

    if "peft" in args.variants:
        steps["peft"] = PeftStep(args, hf_model, prompt, batch_np, np)
        num_params["peft_trainable"] = steps["peft"].num_trainable
    setup_s = time.perf_counter() - t_setup

    order = [v for v in ALL_VARIANTS if v in steps]
    print(f"setup + compile: {setup_s:.1f} s; compile: " +
          ", ".join(f"{n} {steps[n].compile_s:.1f}s" for n in order if steps[n].compile_s),
          flush=True)

    # Warm-up (untimed); the first step's loss checks that the variants compute the same.
    first_loss = {}
    with partitioning.activate(mesh, rules):
        for name in order:
            out = steps[name].run(1)
            first_loss[name] = steps[name].loss(out)
            if args.warmup_steps > 1:
                steps[name].run(args.warmup_steps - 1)
    reference = first_loss["ours"]
    loss_rel_diff = {n: abs(v - reference) / max(abs(reference), 1e-12)
                     for n, v in first_loss.items()}
    losses_match = all(d <= 1e-4 for d in loss_rel_diff.values())
    print("first-step loss: " + ", ".join(f"{n} {v:.6f}" for n, v in first_loss.items()) +
          ("  (all equal)" if losses_match else "  (MISMATCH)"), flush=True)

    # Timed rounds; the order rotates every round.
    times = {n: [] for n in order}
    t_timed = time.perf_counter()
    with partitioning.activate(mesh, rules):
        for r in range(args.rounds):
            shift = r % len(order)
            for name in order[shift:] + order[:shift]:
                if args.pause_s:
                    time.sleep(args.pause_s)
                t0 = time.perf_counter()
                steps[name].run(args.steps_per_round)
                times[name].append((time.perf_counter() - t0) / args.steps_per_round)
            print(f"round {r + 1}/{args.rounds}: " +
                  ", ".join(f"{n} {times[n][-1] * 1e3:.1f}" for n in order) + " ms", flush=True)
    timed_s = time.perf_counter() - t_timed

    if "peft" in steps:
        steps["peft"].flops = steps["peft"].count_flops()

    def ratio(a, b):
        if a not in times or b not in times:
            return None
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    results = {
        "ours_over_finetune": ratio("ours", "finetune"),
        "ours_over_t5x_style": ratio("ours", "t5x_style"),
        "ours_over_peft": ratio("ours", "peft"),
        "gather_over_one_hot": ratio("forward_gather", "forward_one_hot"),
    }
    per_round_ratios = {
        key: [x / y for x, y in zip(times[a], times[b])]
        for key, (a, b) in {"ours_over_finetune": ("ours", "finetune"),
                            "ours_over_t5x_style": ("ours", "t5x_style"),
                            "ours_over_peft": ("ours", "peft"),
                            "gather_over_one_hot": ("forward_gather", "forward_one_hot")}.items()
        if a in times and b in times}

    # Ratio of the fastest rounds: less sensitive to other processes on a shared machine.
    min_ratios = {key: min(times[a]) / min(times[b])
                  for key, (a, b) in {"ours_over_finetune": ("ours", "finetune"),
                                      "ours_over_t5x_style": ("ours", "t5x_style"),
                                      "ours_over_peft": ("ours", "peft"),
                                      "gather_over_one_hot": ("forward_gather",
                                                              "forward_one_hot")}.items()
                  if a in times and b in times}

    variants = {}
    for name in order:
        s = steps[name]
        variants[name] = {
            "median_ms": statistics.median(times[name]) * 1e3,
            "min_ms": min(times[name]) * 1e3,
            "per_round_ms": [t * 1e3 for t in times[name]],
            "flops": s.flops,
            "flops_before_xla_opt": getattr(s, "flops_lowered", None),
            "bytes_accessed": getattr(s, "bytes_accessed", None),
            "dot_generals_traced": getattr(s, "dots_traced", None),
            "dot_generals_lowered": getattr(s, "dots_lowered", None),
            "compile_s": s.compile_s,
            "first_step_loss": first_loss[name],
        }
    variants.get("peft", {})["flops_note"] = (
        "torch.utils.flop_counter (matmul-like ops only; XLA's count includes elementwise ops)")

    # Did XLA drop the T5X-style step's unused gradients?
    flops_check = None
    f_ours = steps["ours"].flops
    f_t5x = steps["t5x_style"].flops if "t5x_style" in steps else None
    f_ft = steps["finetune"].flops if "finetune" in steps else None
    if f_ours and f_t5x:
        flops_check = {"t5x_style_over_ours": f_t5x / f_ours,
                       "t5x_style_over_finetune": (f_t5x / f_ft) if f_ft else None,
                       "ours_over_finetune": (f_ours / f_ft) if f_ft else None}
        lowered_t5x = steps["t5x_style"].flops_lowered
        lowered_ours = steps["ours"].flops_lowered
        if lowered_t5x and lowered_ours:
            flops_check["t5x_style_over_ours_before_xla_opt"] = lowered_t5x / lowered_ours
        flops_check["dot_generals_traced_lowered"] = {
            n: [steps[n].dots_traced, steps[n].dots_lowered]
            for n in ("ours", "t5x_style", "finetune") if n in steps}
        if abs(f_t5x - f_ours) <= 0.02 * f_ours:
            verdict = "eliminated: t5x-style FLOPs equal ours (unused gradients removed)"
        elif f_ft and abs(f_t5x - f_ft) <= 0.02 * f_ft:
            verdict = "not eliminated: t5x-style FLOPs equal full fine-tuning"
        elif f_ft and abs(f_t5x - f_ours) < abs(f_t5x - f_ft):
            verdict = "mostly eliminated: t5x-style FLOPs closer to ours than to fine-tuning"
        elif f_ft:
            verdict = "mostly not eliminated: t5x-style FLOPs closer to fine-tuning"
        else:
            verdict = "not eliminated: t5x-style FLOPs exceed ours (no fine-tuning run)"
        dots = flops_check["dot_generals_traced_lowered"]
        if verdict.startswith("eliminated") and dots["t5x_style"][1] < dots["t5x_style"][0]:
            where = ("already by JAX (dead-code elimination while lowering: dot_generals "
                     f"{dots['t5x_style'][0]} traced -> {dots['t5x_style'][1]} given to XLA, "
                     f"ours {dots['ours'][1]})")
            if lowered_t5x and lowered_ours and abs(lowered_t5x - lowered_ours) <= 0.02 * lowered_ours:
                verdict += "; " + where
        flops_check["verdict"] = verdict
        flops_check["unused_gradients_eliminated"] = verdict.startswith(
            ("eliminated", "mostly eliminated"))

    import flax
    import peft as peft_lib
    import transformers

    environment = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": bench_env.cpu_model(),
        "jax": jax.__version__,
        "jaxlib": getattr(getattr(jax, "lib", None), "__version__", None) or bench_env.pkg_version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_lib.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "cpus_available": threads,
        "jax_threads": threads,
        "xla_eigen_threads_seen": _thread_names().get("tf_XLAEigen"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    report = {
        **results,
        "per_round_ratios": per_round_ratios,
        "min_ratios": min_ratios,
        "variants": variants,
        "flops_check": flops_check,
        "first_step_losses_match": losses_match,
        "first_step_loss_rel_diff": loss_rel_diff,
        "num_params": num_params,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "settings": {
            "dtype": "float32", "dropout_rate": args.dropout,
            "model": "T5.1.1-style (gated-gelu, untied logits_dense), transformers' random init",
            "optimizer": args.optimizer,
            "embedding_lookup_in_train_steps": "gather",
            "timing": "mean step time per round over steps_per_round steps; median/min over "
                      "rounds; ratios = median of per-round ratios (ours / other)",
        },
        "environment": environment,
        "setup_s": setup_s,
        "timed_s": timed_s,
    }
    _print_table(report, order)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def _fmt_flops(x):
    return "-" if x is None else f"{x / 1e9:.2f}G"


def _print_table(report, order):
    v = report["variants"]
    cfg = report["config"]
    env = report["environment"]
    print()
    print(f"T5.1.1-style d={cfg['emb_dim']}, {cfg['num_layers']}+{cfg['num_layers']} layers, "
          f"vocab {cfg['vocab_size']}, batch {cfg['batch']}x{cfg['inputs_length']} -> "
          f"{cfg['targets_length']}, prompt {cfg['prompt_length']}, {cfg['optimizer']}, "
          f"float32, dropout {cfg['dropout']}; {cfg['rounds']} rounds x "
          f"{cfg['steps_per_round']} steps; {env['jax_backend']} x{len(env['jax_devices'])}, "
          f"{env['jax_threads']} JAX / {env['torch_threads']} torch threads")
    header = (f"{'variant':<16}{'median ms':>10}{'min ms':>9}{'ours/this':>10}"
              f"{'(min)':>7}{'FLOPs':>9}{'pre-opt':>9}{'dots':>10}")
    print(header)
    print("-" * len(header))
    ours = v["ours"]["per_round_ms"]
    for name in order:
        row = v[name]
        ratio = ratio_min = ""
        if name in TRAIN_VARIANTS:
            ratio = f"{statistics.median(a / b for a, b in zip(ours, row['per_round_ms'])):.3f}"
            ratio_min = f"{v['ours']['min_ms'] / row['min_ms']:.2f}"
        flops = _fmt_flops(row["flops"]) + ("*" if name == "peft" and row["flops"] else "")
        dots = ("" if row.get("dot_generals_traced") is None else
                f"{row['dot_generals_traced']}->{row['dot_generals_lowered']}")
        print(f"{name:<16}{row['median_ms']:>10.1f}{row['min_ms']:>9.1f}{ratio:>10}"
              f"{ratio_min:>7}{flops:>9}{_fmt_flops(row.get('flops_before_xla_opt')):>9}"
              f"{dots:>10}")
    print("ours/this: median of per-round ratios; (min): fastest round / fastest round; "
          "FLOPs: XLA cost analysis of the compiled step, pre-opt: of the lowered HLO; "
          "dots: dot_general ops traced -> handed to XLA")
    if "peft" in v:
        print("* torch FlopCounterMode: matmul-like ops only")
    print()
    for key in ("ours_over_finetune", "ours_over_t5x_style", "ours_over_peft",
                "gather_over_one_hot"):
        val = report[key]
        rounds = report["per_round_ratios"].get(key)
        spread = f"  (rounds: {min(rounds):.3f} .. {max(rounds):.3f})" if rounds else ""
        mr = report["min_ratios"].get(key)
        mins = "" if mr is None else f"  min/min {mr:.3f}"
        print(f"{key:<22}{'-' if val is None else f'{val:.3f}'}{spread}{mins}")
    fc = report["flops_check"]
    if fc:
        print(f"t5x-style FLOPs / ours = {fc['t5x_style_over_ours']:.3f}" +
              (f", / finetune = {fc['t5x_style_over_finetune']:.3f}"
               if fc.get("t5x_style_over_finetune") else "") +
              (f"; before XLA opt / ours = {fc['t5x_style_over_ours_before_xla_opt']:.3f}"
               if fc.get("t5x_style_over_ours_before_xla_opt") else "") +
              f" -> {fc['verdict']}")
    print(f"first-step losses match: {report['first_step_losses_match']}")


def _thread_names():
    """Counts of this process's thread names (Linux), e.g. XLA's 'tf_XLAEigen' pool."""
    import collections

    names = collections.Counter()
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    names[f.read().strip()] += 1
            except OSError:
                pass
    except OSError:
        pass
    return dict(names)


if __name__ == "__main__":
    main(sys.argv[1:])
