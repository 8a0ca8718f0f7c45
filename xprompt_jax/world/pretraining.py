"""Pretraining of the world's tiny T5.1.1 (the library of `python -m
xprompt_jax.world.pretrain`), saved as a T5X (orbax) checkpoint.

Full training of every weight of a T5.1.1 (gated GELU, untied logits, no dropout) on a
mixture drawn fresh at every step (seeded):

* span corruption (T5's objective: 15% noise, mean span 3, sentinels) over world
  documents (`corpus.document`);
* supervised examples of the four world tasks in T5's format **with the task name**
  (`boolq passage: ... question: ...` -> `True`), and of their negated twins
  (`not boolq passage: ...` -> the opposite answer);
* a few bare examples (no task name) whose answer is drawn at random: the format alone
  does not say which twin is wanted, so a prompt has to stand in for the task name.

Curriculum: the negated twins join after `twins_from` of the steps, once the plain rules
are learned (drawn together from the start, a rule and its negation leave the rule
almost no net gradient, and nothing is learned). No supervised example repeats an input of
the world's validation or test splits. Optimizer: AdamW (default; `optimizer='adafactor'`
for T5X-style Adafactor) with a warmup + cosine learning-rate schedule. The dev accuracies
logged during pretraining (prefixed, negated-twin and bare inputs, `evaluate`) follow the
curriculum; a prompt's evaluation is `xprompt_jax.evaluation`'s.

Output (`PretrainConfig.output_dir`): `checkpoint_<steps>/` in the layout `t5x/train.py`
writes (orbax PyTree with OCDBT under `state/`: `{'target': params, 'state': {'step',
'param_states': {<param path>: {'m', 'v', 'v_col', 'v_row'}}}}`, read by
`xprompt_jax.checkpoints.load_t5x_params`), and `pretrain_log.json` (settings, loss
curve, dev accuracies, wall time); `install` copies a checkpoint into the package.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import corpus
from . import paths
from . import tasks as world_tasks
from . import writer

# The shipped model (gin/models/world_tiny.gin must agree; tests check it).
MODEL_KWARGS: Dict[str, Any] = dict(
    vocab_size=768,            # 600 pieces + 100 sentinels = 700, padded to 128s
    emb_dim=128, num_heads=8, head_dim=16, num_encoder_layers=3, num_decoder_layers=2,
    mlp_dim=256, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    dropout_rate=0.0, dtype="float32")
INPUT_LENGTH = 48
TARGET_LENGTH = 16


@dataclasses.dataclass
class PretrainConfig:
    output_dir: str
    steps: int = 3500
    batch_size: int = 64
    seed: int = 0
    optimizer: str = "adamw"         # 'adamw' or 'adafactor'
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    span_rate: float = 0.15          # share of span-corruption examples
    bare_rate: float = 0.1           # share of supervised examples without a task name
    negated_rate: float = 0.4        # share of prefixed examples from the negated twins
    # curriculum: the twins join after this share of the steps (the plain rules first;
    # from scratch, a rule and its negation at once give the rule almost no net signal)
    twins_from: float = 0.4
    eval_every: int = 500
    eval_examples: int = 200         # per task during training (full dev set at the end)
    vocab_path: Optional[str] = None
    world_seed: int = writer.DEFAULT_SEED
    # supervised tasks and their sampling weights ('task:weight', comma-separated): COPA,
    # the slowest rule to learn (two alternatives to compare), is drawn more often.
    tasks: str = "boolq:1,rte:1,copa:2,wic:1.5"
    # continue from a checkpoint (its weights; fresh optimizer and schedule): the saved
    # step is its step + `steps`
    init_checkpoint: Optional[str] = None


# ----------------------------------------------------------------------------- data
def random_partition(rng: np.random.RandomState, total: int, parts: int) -> List[int]:
    """`parts` positive integers summing to `total` (uniform over compositions)."""
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False)) if parts > 1 \
        else np.array([], int)
    bounds = np.concatenate([[0], cuts, [total]])
    return list(np.diff(bounds))


def span_corruption(ids: Sequence[int], rng: np.random.RandomState, sentinel_id,
                    noise_density: float = 0.15, mean_span: float = 3.0
                    ) -> Tuple[List[int], List[int]]:
    """T5's span corruption: (inputs, targets) without EOS. `sentinel_id(k)` is the id
    of `<extra_id_k>`."""
    n = len(ids)
    num_noise = int(min(max(round(n * noise_density), 1), n - 1))
    num_spans = int(max(min(round(num_noise / mean_span), num_noise, n - num_noise), 1))
    noise = random_partition(rng, num_noise, num_spans)
    keep = random_partition(rng, n - num_noise, num_spans)
    inputs, targets, pos = [], [], 0
    for k in range(num_spans):
        inputs += list(ids[pos:pos + keep[k]])
        pos += keep[k]
        inputs.append(sentinel_id(k))
        targets.append(sentinel_id(k))
        targets += list(ids[pos:pos + noise[k]])
        pos += noise[k]
    targets.append(sentinel_id(num_spans))
    return inputs, targets


class Mixture:
    """Draws pretraining examples (token ids with EOS) from a seeded stream."""

    def __init__(self, config: PretrainConfig, sp):
        self.config = config
        self.sp = sp
        self.rng = random.Random(f"{config.seed}/pretrain")
        self.np_rng = np.random.RandomState(config.seed)
        self.vocab_pieces = sp.get_piece_size()
        weights = [item.split(":") for item in config.tasks.split(",") if item]
        self.task_names = tuple(w[0] for w in weights)
        self.task_weights = [float(w[1]) if len(w) > 1 else 1.0 for w in weights]
        self.held_out = {t: writer.held_out_inputs(t, writer.DEFAULT_SIZES, config.world_seed)
                         for t in self.task_names}
        self.counts = {"span": 0, "prefixed": 0, "negated": 0, "bare": 0, "truncated": 0}

    def sentinel(self, k: int) -> int:
        return self.vocab_pieces + corpus.EXTRA_IDS - 1 - k

    def encode(self, text: str, length: int) -> List[int]:
        ids = self.sp.encode(text)
        if len(ids) > length - 1:
            self.counts["truncated"] += 1
            ids = ids[:length - 1]
        return ids + [1]

    def supervised(self, twins: bool = True) -> Tuple[List[int], List[int], str]:
        """One supervised example; `twins` False: no negated twin (curriculum start)."""
        cfg, rng = self.config, self.rng
        name = rng.choices(self.task_names, self.task_weights)[0]
        task = world_tasks.TASKS[name]
        label = rng.randrange(2)
        while True:
            fields = task.sample(rng, label)
            if task.render(fields) not in self.held_out[name]:
                break
        negated = False
        if rng.random() < cfg.bare_rate:  # no task name: the answer is drawn at random
            kind, prefix, label = "bare", None, rng.randrange(2)
        else:
            negated = twins and rng.random() < cfg.negated_rate
            kind = "negated" if negated else "prefixed"
            prefix = world_tasks.prefix(name, negated)
        self.counts[kind] += 1
        return (self.encode(task.render(fields, prefix), INPUT_LENGTH),
                self.encode(task.target(label, negated), TARGET_LENGTH), kind)

    def span(self) -> Tuple[List[int], List[int], str]:
        self.counts["span"] += 1
        ids = self.sp.encode(corpus.document(self.rng))[:INPUT_LENGTH - 8]
        inputs, targets = span_corruption(ids, self.np_rng, self.sentinel)
        return inputs[:INPUT_LENGTH - 1] + [1], targets[:TARGET_LENGTH - 1] + [1], "span"

    def batch(self, size: int, twins: bool = True) -> Dict[str, np.ndarray]:
        enc = np.zeros((size, INPUT_LENGTH), np.int32)
        tgt = np.zeros((size, TARGET_LENGTH), np.int32)
        is_span = np.zeros((size,), np.float32)
        for i in range(size):
            if self.rng.random() < self.config.span_rate:
                inputs, targets, _ = self.span()
                is_span[i] = 1.0
            else:
                inputs, targets, _ = self.supervised(twins)
            enc[i, :len(inputs)] = inputs
            tgt[i, :len(targets)] = targets
        dec_in = np.concatenate([np.zeros((size, 1), np.int32), tgt[:, :-1]], axis=1)
        return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
                "decoder_target_tokens": tgt, "is_span": is_span}


# ----------------------------------------------------------------------------- eval
def dev_rows(task_name: str, sp, variant: str, max_examples: Optional[int] = None,
             world_seed: int = writer.DEFAULT_SEED):
    """Rank-classification rows of the dev split: `variant` is 'prefixed' (with the task
    name), 'negated' (the negated twin's name: accuracy against the twin's answers) or
    'bare' (no name)."""
    task = world_tasks.TASKS[task_name]
    examples = writer.generate_split(task_name, "validation",
                                     writer.DEFAULT_SIZES["validation"], world_seed)
    if max_examples:
        examples = examples[:max_examples]
    negated = variant == "negated"
    prefix = None if variant == "bare" else world_tasks.prefix(task_name, negated)
    inputs = []
    gold = []
    for fields, label in examples:
        ids = sp.encode(task.render(fields, prefix))[:INPUT_LENGTH - 1] + [1]
        inputs.append(ids)
        gold.append(1 - label if negated else label)
    label_ids = [sp.encode(l)[:TARGET_LENGTH - 1] + [1] for l in task.labels]
    return inputs, label_ids, np.asarray(gold)


def make_scorer(model):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def score(params, enc, dec_in, tgt):
        logits = model.apply({"params": params}, enc, dec_in, tgt, enable_dropout=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        tok = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        return jnp.sum(tok * (tgt > 0), axis=-1)

    return score


def rank_accuracy(score_fn, params, inputs, label_ids, gold, batch_size: int = 128) -> float:
    """Accuracy (%) of picking the most likely label string."""
    rows = [(x, y) for x in inputs for y in label_ids]
    scores = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        enc = np.zeros((batch_size, INPUT_LENGTH), np.int32)
        tgt = np.zeros((batch_size, TARGET_LENGTH), np.int32)
        for i, (x, y) in enumerate(chunk):
            enc[i, :len(x)] = x
            tgt[i, :len(y)] = y
        dec = np.concatenate([np.zeros((batch_size, 1), np.int32), tgt[:, :-1]], axis=1)
        scores.extend(np.asarray(score_fn(params, enc, dec, tgt))[:len(chunk)].tolist())
    scores = np.asarray(scores).reshape(len(inputs), len(label_ids))
    return float(100.0 * np.mean(np.argmax(scores, axis=1) == gold))


def evaluate(score_fn, params, sp, max_examples: Optional[int], variants=("prefixed",),
             world_seed: int = writer.DEFAULT_SEED,
             task_names: Sequence[str] = world_tasks.TASK_NAMES) -> Dict[str, float]:
    out = {}
    for name in task_names:
        for variant in variants:
            inputs, label_ids, gold = dev_rows(name, sp, variant, max_examples, world_seed)
            out[f"{name}/{variant}"] = rank_accuracy(score_fn, params, inputs, label_ids, gold)
    return out


# ----------------------------------------------------------------------------- checkpoint
def t5x_param_states(opt_state, params) -> Dict[str, Any]:
    """T5X Adafactor slots `{'m', 'v', 'v_col', 'v_row'}` per parameter (the layout of a
    checkpoint written by t5x/train.py with its Adafactor).

    From our Adafactor's `FactoredState` when training used it (no momentum: `m` is a
    `[1]` placeholder, as in T5X); otherwise (AdamW) `[1]`-shaped zero placeholders: the
    layout T5X expects, without the moments of an optimizer it would not run.
    """
    import jax
    import jax.numpy as jnp
    import optax

    factored = None
    for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(
            x, optax.FactoredState)):
        if isinstance(leaf, optax.FactoredState):
            factored = leaf
            break
    placeholder = lambda: jnp.zeros((1,), jnp.float32)  # noqa: E731
    if factored is None:
        return jax.tree_util.tree_map(
            lambda p: {"m": placeholder(), "v": placeholder(), "v_col": placeholder(),
                       "v_row": placeholder()}, params)
    return jax.tree_util.tree_map(
        lambda p, v, vc, vr: {"m": placeholder(), "v": v, "v_col": vc, "v_row": vr},
        params, factored.v, factored.v_col, factored.v_row)


def save_t5x_checkpoint(model_dir: str, step: int, params, param_states) -> str:
    """Writes `model_dir/checkpoint_<step>/state` as t5x/train.py does (orbax PyTree,
    OCDBT); returns the `checkpoint_<step>` path."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    tree = {"target": params,
            "state": {"step": jnp.asarray(step, jnp.int32), "param_states": param_states}}
    tree = jax.tree_util.tree_map(jnp.asarray, tree)
    options = ocp.CheckpointManagerOptions(step_prefix="checkpoint", create=True,
                                           enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(os.path.abspath(model_dir), options=options,
                                    item_names=("state",))
    try:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(tree)))
        manager.wait_until_finished()
    finally:
        manager.close()
    return os.path.join(os.path.abspath(model_dir), f"checkpoint_{step}")


def checkpoint_size_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


# ----------------------------------------------------------------------------- training
def model_config():
    from xprompt_jax.models import T5Config

    return T5Config(**MODEL_KWARGS)


def pretrain(config: PretrainConfig, log=print) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax
    import sentencepiece as spm

    from xprompt_jax.models import T5
    from xprompt_jax.training import optimizers

    start_time = time.time()
    os.makedirs(config.output_dir, exist_ok=True)
    vocab_path = config.vocab_path or paths.vocab_path()
    sp = spm.SentencePieceProcessor(model_file=vocab_path)
    if sp.get_piece_size() + corpus.EXTRA_IDS > MODEL_KWARGS["vocab_size"]:
        raise ValueError(f"vocabulary of {sp.get_piece_size()} pieces + "
                         f"{corpus.EXTRA_IDS} sentinels does not fit the embedding")
    cfg = model_config()
    model = T5(cfg)
    mixture = Mixture(config, sp)
    dummy = mixture.batch(2)
    params = jax.jit(lambda r: model.init(
        r, dummy["encoder_input_tokens"], dummy["decoder_input_tokens"],
        dummy["decoder_target_tokens"], enable_dropout=False)["params"])(
            jax.random.PRNGKey(config.seed))
    first_step = 0
    if config.init_checkpoint:
        from xprompt_jax.checkpoints import load_t5x_params

        params, first_step = load_t5x_params(config.init_checkpoint, expected=params,
                                             return_step=True)
        first_step = int(first_step or 0)
        log(f"continuing from {config.init_checkpoint} (step {first_step})")
    num_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    log(f"T5.1.1 d={cfg.emb_dim} layers={cfg.num_encoder_layers}+{cfg.num_decoder_layers} "
        f"mlp={cfg.mlp_dim} vocab={cfg.vocab_size}: {num_params:,} parameters")

    warmup = min(config.warmup_steps, max(config.steps // 2, 1))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(config.steps, warmup + 1),
        end_value=config.learning_rate * 0.1)
    if config.optimizer == "adafactor":
        tx = optimizers.adafactor(learning_rate=schedule, multiply_by_parameter_scale=True,
                                  weight_decay_rate=None, clipping_threshold=1.0)
    elif config.optimizer == "adamw":
        tx = optimizers.adamw(learning_rate=schedule, b2=0.98, weight_decay=0.01,
                              max_grad_norm=1.0)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    opt_state = tx.init(params)

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["encoder_input_tokens"],
                             batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                             enable_dropout=False)
        tgt = batch["decoder_target_tokens"]
        weights = (tgt > 0).astype(jnp.float32)
        token_loss = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), tgt) * weights
        per_example = token_loss.sum(-1)
        tokens = weights.sum(-1)
        span = batch["is_span"]
        metrics = {
            "span_loss": (per_example * span).sum() / jnp.maximum((tokens * span).sum(), 1),
            "task_loss": (per_example * (1 - span)).sum() /
                         jnp.maximum((tokens * (1 - span)).sum(), 1)}
        return token_loss.sum() / jnp.maximum(weights.sum(), 1), metrics

    @jax.jit
    def train_step(p, s, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, dict(metrics, loss=loss)

    score_fn = make_scorer(model)
    history: List[Dict[str, Any]] = []
    evals: List[Dict[str, Any]] = []
    window: List[Dict[str, float]] = []
    for step in range(1, config.steps + 1):
        batch = mixture.batch(config.batch_size,
                              twins=step > int(config.twins_from * config.steps))
        params, opt_state, metrics = train_step(params, opt_state, batch)
        window.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        if step % 50 == 0 or step == config.steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window = []
            record = {"step": step, "time_s": round(time.time() - start_time, 1), **mean}
            history.append(record)
            log(f"step {step}/{config.steps} loss {mean['loss']:.4f} span "
                f"{mean['span_loss']:.4f} task {mean['task_loss']:.4f} "
                f"({record['time_s']:.0f}s)")
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            acc = evaluate(score_fn, params, sp, config.eval_examples,
                           ("prefixed", "negated", "bare"), world_seed=config.world_seed,
                           task_names=mixture.task_names)
            evals.append({"step": step, **acc})
            log(f"step {step} dev accuracy ({config.eval_examples}/task): "
                + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()))
    train_time = time.time() - start_time
    final = evaluate(score_fn, params, sp, None, ("prefixed", "negated", "bare"),
                     world_seed=config.world_seed, task_names=mixture.task_names)
    evals.append({"step": config.steps, **final})
    log("final dev accuracy: " + ", ".join(f"{k} {v:.1f}" for k, v in final.items()))

    params = jax.device_get(params)
    ckpt = save_t5x_checkpoint(config.output_dir, first_step + config.steps, params,
                               jax.device_get(t5x_param_states(opt_state, params)))
    summary = {
        "command": " ".join([os.path.basename(sys.executable), "-m",
                             "xprompt_jax.world.pretrain"] + sys.argv[1:]),
        "config": dataclasses.asdict(config),
        "model": dict(MODEL_KWARGS, mlp_activations=list(MODEL_KWARGS["mlp_activations"])),
        "num_params": num_params,
        "vocab_pieces": sp.get_piece_size(),
        "checkpoint": ckpt,
        "checkpoint_bytes": checkpoint_size_bytes(ckpt),
        "train_time_s": round(train_time, 1),
        "total_time_s": round(time.time() - start_time, 1),
        "final_losses": history[-1] if history else None,
        "example_counts": mixture.counts,
        "history": history,
        "evals": evals,
        "final_dev_accuracy": final,
        "jax_version": jax.__version__,
    }
    with open(os.path.join(config.output_dir, "pretrain_log.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(f"saved {ckpt} ({summary['checkpoint_bytes'] / 1e6:.2f} MB) in "
        f"{summary['total_time_s']:.0f}s")
    return summary


def install(checkpoint: str, log_path: Optional[str] = None) -> str:
    """Copies a checkpoint (and its log) into the package data, replacing the old one."""
    data_dir = paths.data_dir()
    for name in os.listdir(data_dir):
        if name.startswith("checkpoint_"):
            shutil.rmtree(os.path.join(data_dir, name))
    target = os.path.join(data_dir, os.path.basename(checkpoint.rstrip("/")))
    shutil.copytree(checkpoint, target)
    if log_path:
        shutil.copy(log_path, os.path.join(data_dir, "pretrain_log.json"))
    return target
