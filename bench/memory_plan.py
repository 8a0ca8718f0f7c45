#!/usr/bin/env python
"""Per-device memory of the prompt-tuning train step for every T5 size, from compiled steps.

For each model in `gin/models/` (T5 1.0 small..11B, T5.1.1 small..xxl, LM-adapted, tiny)
and each remat policy (`T5Config.remat_policy`), the prompt-tuning train step of the
trainer (`make_train_step` + `jit_train_step`: Adafactor on a 100-token prompt, frozen
weights in bfloat16, bf16 activations, inputs 512 + 100 prompt -> targets 16) is lowered
with *abstract* parameters (`jax.eval_shape`: no weight is allocated) on an emulated CPU
mesh `('data', 'model')` with T5X's 1-D logical axis rules (what our gin uses), compiled,
and `compiled.memory_analysis()` gives the per-device bytes: arguments (frozen weight
shard, prompt, optimizer state, batch shard), outputs, aliased (donated) bytes and
temporaries. `peak = arguments + outputs - aliased + temporaries` (generated code excluded).

Meshes: a slice with D devices at model parallelism M runs data parallelism D/M; a device
holds 1/M of the sharded weights and the activations of `batch * M / D` examples. The
per-device program of mesh (D/M, M) at global batch B is the program of mesh (1, M) at
batch B*M/D (the only cross-data collective is the prompt's gradient all-reduce, a few
hundred KB), so each row is compiled on M emulated devices with that per-shard batch.
Model parallelism per size follows `launch/tpu_pod.sh` (8 for xxl/11B) and T5X practice
(4 for xl/3B, 2 for large, 1 below). `--microbatches k` compiles the step with
`num_microbatches=k` (activations of batch/k at a time).

CPU vs TPU: these are XLA:CPU buffer assignments, an estimate of TPU's. TPU pads arrays to
(8, 128) tiles (bf16: (16, 128)), fuses differently and runs its own rematerialisation
pass when memory is short; XLA:CPU may also upcast bf16 matmuls to float32 temporaries.
Argument bytes (weights, optimizer state) are exact either way; temporaries are the
uncertain part. No published per-core figure for T5 prompt tuning was found to calibrate
against (see docs/scale.md).

    python bench/memory_plan.py --sizes t5_1_1_small --json /tmp/mem.json   # ~1 min
    python bench/memory_plan.py --json /tmp/memory_plan.json                # every size
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

NUM_DEVICES = 8
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={NUM_DEVICES}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_env  # noqa: E402  (bench/ is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The page whose memory-plan markers `--write_readme` rewrites.
DOCS_PAGE = os.path.join(REPO, "docs", "scale.md")
GIB = 1024 ** 3
POLICIES = ("none", "dots_with_no_batch_dims_saveable", "full")
# (name, devices, GiB per device): the slices the table of docs/scale.md answers for.
# v4 chips are one JAX device each (megacore): v4-16 = 8 devices of 32 GiB.
SLICES = (("v3-8", 8, 16), ("v4-8", 4, 32), ("v4-16", 8, 32), ("v4-32", 16, 32),
          ("v3-32", 32, 16), ("v3-64", 64, 16), ("v3-128", 128, 16), ("gpu-80GB", 1, 80))


def model_parallelism(cfg) -> int:
    """Model-parallel width per size (launch/tpu_pod.sh uses 8 for xxl)."""
    params = _param_count(cfg)
    if params > 6e9:
        return 8
    if params > 2e9:
        return 4
    if params > 5e8:
        return 2
    return 1


def _param_count(cfg) -> float:
    e, h, d, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    nwi = len(cfg.mlp_activations)
    attn = 4 * e * h * d
    mlp = (nwi + 1) * e * f
    layers = cfg.num_encoder_layers * (attn + mlp) + cfg.num_decoder_layers * (2 * attn + mlp)
    emb = cfg.vocab_size * e * (1 if cfg.logits_via_embedding else 2)
    return layers + emb


def model_configs(names=None):
    """{gin name: T5Config} of gin/models/*.gin (world_tiny excluded: it needs its data)."""
    import gin

    from xprompt_jax import gin_utils

    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "gin", "models", "*.gin"))):
        name = os.path.basename(path)[:-4]
        if name.startswith("world") or (names and name not in names):
            continue
        gin.clear_config()
        gin_utils.parse_gin([path], [], [], finalize=False)
        out[name] = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
        gin.clear_config()
    if names and set(names) - set(out):
        raise SystemExit(f"unknown sizes {sorted(set(names) - set(out))}; known: {sorted(out)}")
    return out


def _shape_key(cfg):
    return (cfg.vocab_size, cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim,
            cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.mlp_activations,
            cfg.logits_via_embedding)


def _abstract_step_inputs(cfg, policy, batch, args, layers=None, context=None):
    """The prompt-tuning step's inputs, all abstract (`jax.ShapeDtypeStruct`, nothing
    allocated): `(model, params_axes, trainable, frozen bf16, batch)` for `cfg` with
    `policy`, bf16 activations, `layers` per stack (None: the config's), `batch` examples
    of `inputs_length` -> `targets_length` tokens. `context`: entered around the
    abstract init (e.g. a mesh and its axis rules)."""
    import contextlib

    import jax
    import jax.numpy as jnp

    from xprompt_jax.models.prompted import PromptedT5
    from xprompt_jax.prompts.soft_prompt import SoftPrompt
    from xprompt_jax.training.params import split_params

    cfg = cfg.replace(remat_policy=policy, dtype="bfloat16")
    if layers is not None:
        cfg = cfg.replace(num_encoder_layers=layers, num_decoder_layers=layers)
    model = PromptedT5(config=cfg, prompt=SoftPrompt(length=args.prompt_length))
    with context or contextlib.nullcontext():
        abstract = jax.eval_shape(
            lambda r: model.init(r, jnp.ones((1, 8), jnp.int32), jnp.ones((1, 4), jnp.int32),
                                 jnp.ones((1, 4), jnp.int32), enable_dropout=False),
            jax.random.PRNGKey(0))
    trainable, frozen = split_params(abstract["params"], r".*prompt.*")
    frozen = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16),
                                    frozen)
    enc = jax.ShapeDtypeStruct((batch, args.inputs_length), jnp.int32)
    dec = jax.ShapeDtypeStruct((batch, args.targets_length), jnp.int32)
    batch_abs = {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
                 "decoder_target_tokens": dec,
                 "decoder_loss_weights": jax.ShapeDtypeStruct(dec.shape, jnp.float32)}
    return model, abstract["params_axes"], trainable, frozen, batch_abs


def measure(cfg, policy, model_par, batch, args, layers=None):
    """Compiles the abstract train step on a (1, model_par) mesh; per-device bytes.
    `layers`: override the depth of both stacks (for the depth extrapolation)."""
    import jax
    import jax.numpy as jnp

    from xprompt_jax.training import optimizers, partitioning
    from xprompt_jax.training.train_step import (LossConfig, TrainState, jit_train_step,
                                                 make_train_step)

    mesh = partitioning.make_mesh((1, model_par), devices=jax.devices()[:model_par])
    rules = partitioning.standard_logical_axis_rules()
    model, axes, trainable, frozen, batch_abs = _abstract_step_inputs(
        cfg, policy, batch, args, layers, context=partitioning.activate(mesh, rules))
    optimizer = optimizers.adafactor()
    state = jax.eval_shape(lambda p: TrainState.create(p, optimizer), trainable)
    replicated = partitioning.replicated(mesh)
    trainable_sh = partitioning.param_shardings(trainable, axes, mesh, rules)
    state_sh = TrainState(step=replicated, params=trainable_sh,
                          opt_state=jax.tree_util.tree_map(lambda _: replicated, state.opt_state))
    frozen_sh = {"params": partitioning.param_shardings(frozen, axes, mesh, rules)}
    batch_sh = partitioning.batch_sharding(mesh)
    step = make_train_step(model, optimizer, LossConfig(), args.microbatches)
    jitted = jit_train_step(step, state_sh, frozen_sh, batch_sh, replicated)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    t0 = time.time()
    with partitioning.activate(mesh, rules):
        compiled = jitted.lower(state, {"params": frozen}, batch_abs, rng).compile()
    seconds = time.time() - t0
    mem = compiled.memory_analysis()
    row = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in
           ("argument", "output", "alias", "temp", "generated_code")}
    row["peak"] = row["argument"] + row["output"] - row["alias"] + row["temp"]
    row["compile_s"] = round(seconds, 1)
    return row


def residuals(cfg, policy, model_par, batch, args, layers=None):  # noqa: C901
    """Bytes per device of the activations the step keeps between its forward and backward
    pass (the vjp residuals of the loss w.r.t. the prompt only, frozen weights and batch
    excluded), from the traced program: no compile, backend-independent, so it shows what
    the remat policy changes whatever a compiler's buffer assignment does with it.

    Only activations count (a leading batch dim; choose `batch` unlike any model
    dimension) and position biases `[1, H, T, T]`; batch-free leaves are views of the frozen
    weights (e.g. a reshaped kernel), which are arguments already.

    Per device under T5X's 1-D rules at model parallelism M: residuals with a heads axis
    (`[B, H, ...]` / `[B, T, H, d]`), an mlp axis (`[..., mlp_dim]`) or a vocab axis
    (`[..., vocab]`) are split M ways, the rest (`[B, T, embed]`) are replicated - read off
    the shapes (an estimate where sizes coincide).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from xprompt_jax.training.params import merge_params
    from xprompt_jax.training.train_step import LossConfig, batch_loss_sums

    model, _, trainable, frozen, batch_abs = _abstract_step_inputs(cfg, policy, batch, args,
                                                                   layers)
    out = {}

    def traced(trainable, frozen, batch_in):
        def loss(t):
            variables = {"params": merge_params(t, frozen)}
            return batch_loss_sums(model, variables, batch_in, None, LossConfig(), False)[0]

        _, vjp = jax.vjp(loss, trainable)
        inputs = {id(x) for x in jax.tree_util.tree_leaves((trainable, frozen, batch_in))}
        replicated = sharded = 0
        seen = set(inputs)  # an array several layers keep (e.g. a mask) counts once
        for leaf in jax.tree_util.tree_leaves(vjp):
            if id(leaf) in seen or not hasattr(leaf, "shape"):
                continue
            seen.add(id(leaf))
            nbytes = int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
            shape = tuple(leaf.shape)
            if not shape or (shape[0] != batch and not (len(shape) == 4 and shape[0] == 1)):
                # batch-free: views of the frozen weights (a reshaped or cast kernel, which
                # XLA does not keep as a second copy); activations lead with the batch and
                # position biases are [1, H, T, T]
                out["batch_free"] = out.get("batch_free", 0) + nbytes
                continue
            split = len(shape) >= 3 and (
                shape[-1] in (cfg.mlp_dim, cfg.vocab_size)
                or (len(shape) == 4 and cfg.num_heads in shape[1:3]))
            if split:
                sharded += nbytes
            else:
                replicated += nbytes
        out.update(replicated=replicated, sharded=sharded)
        return jnp.zeros(())

    jax.eval_shape(traced, trainable, frozen, batch_abs)
    if model_par is None:  # both parts, for callers that split them for several M
        return out["replicated"], out["sharded"]
    return int(out["replicated"] + out["sharded"] / model_par)


FIELDS = ("argument", "output", "alias", "temp")


def estimate(cfg, policy, model_par, batches, args, cache):
    """Per-device bytes at full depth for each per-shard batch in `batches`.

    `--full_depth`: one compile per batch. Default (depth extrapolation, 3 compiles for all
    batches): compile 1 and 2 layers per stack at batch b1 and 1 layer at b2 = 2*b1, then
    bytes(L, b) = bytes(1, b) + (L - 1) * per_layer(b), with bytes(1, b) linear in b through
    the two 1-layer points and the per-layer increment of temporaries proportional to b
    (activations) while that of arguments/outputs (the layer's weight shard) is not.
    Checked against full-depth compiles (docs/scale.md).
    """
    layers = cfg.num_encoder_layers
    key = lambda L, b: (_shape_key(cfg), policy, model_par, b, L)

    def get(L, b):
        if key(L, b) not in cache:
            cache[key(L, b)] = measure(cfg, policy, model_par, b, args,
                                       layers=None if L == layers else L)
            r = cache[key(L, b)]
            print(f"  compiled {policy} model={model_par} layers={L} batch/shard={b}: "
                  f"{(r['argument'] + r['output'] - r['alias'] + r['temp']) / GIB:.2f} GiB "
                  f"({r['compile_s']} s)", file=sys.stderr, flush=True)
        return cache[key(L, b)]

    out = {}
    if args.full_depth or cfg.num_decoder_layers != layers:
        for b in batches:
            out[b] = dict(get(layers, b), method="compiled at full depth",
                          temp_1layer=get(1, b)["temp"])
        return out
    b1 = args.probe_batch
    b2 = 2 * b1
    one1, two1, one2 = get(1, b1), get(2, b1), get(1, b2)
    for b in batches:
        row = {}
        for f in FIELDS:
            at1 = one1[f] + (one2[f] - one1[f]) * (b - b1) / (b2 - b1)
            per_layer = two1[f] - one1[f]
            if f == "temp":
                per_layer *= b / b1
            row[f] = int(round(at1 + (layers - 1) * per_layer))
            if f == "temp":
                row["temp_1layer"] = int(round(at1))
        row["compile_s"] = round(one1["compile_s"] + two1["compile_s"] + one2["compile_s"], 1)
        row["method"] = f"extrapolated from 1-2 layers at batch {b1}, {b2}"
        out[b] = row
    return out


def _compiled_from(path):
    """{(size, M, per-shard batch): the compiled 'none' figures} of an earlier `--json`:
    arguments, outputs, aliased, temporaries, the one-layer temporaries (kept in the remat
    rows' `working_set`) - what `--reuse_compiles` takes instead of compiling again."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    out = {}
    for r in rows:
        if r["policy"] != "none":
            continue
        key = (r["size"], r["mesh"][1], r["batch_per_device_step"])
        remat = next(x for x in rows if x["size"] == r["size"] and x["slice"] == r["slice"]
                     and x["policy"] != "none")
        out[key] = {"argument": r["argument"], "output": r["output"], "alias": r["alias"],
                    "temp": r["temp"], "compile_s": r.get("compile_s", 0.0),
                    "temp_1layer": remat["working_set"], "method": r["method"]}
    return out


def smallest_fit(rows, size, policy, microbatches=1, key="plan_peak"):
    """The listed slice with the fewest devices whose per-device `key` fits, or None."""
    best = None
    for r in rows:
        if r["size"] == size and r["policy"] == policy and r["microbatches"] == microbatches \
                and r[key] <= r["gib_per_device"] * GIB:
            if best is None or r["devices"] < best["devices"]:
                best = r
    return best


README_BEGIN = "<!-- memory-plan:begin (bench/memory_plan.py --write_readme writes this block) -->"
README_END = "<!-- memory-plan:end -->"
SHORT = {"none": "none", "dots_with_no_batch_dims_saveable": "dots", "full": "full"}


def readme_tables(rows, args) -> str:
    """The two tables of docs/scale.md: XXL per slice and policy; every size's smallest slice."""
    fits = lambda r: r["plan_peak"] <= r["gib_per_device"] * GIB  # noqa: E731
    lines = [README_BEGIN, "",
             f"T5.1.1 XXL (`t5_1_1_xxl`; `t5_1_1_lm100k_xxl` has the same shapes), batch "
             f"{args.batch} x ({args.inputs_length} + {args.prompt_length}) -> "
             f"{args.targets_length}, GiB per device: arguments (weights, prompt, optimizer, "
             "batch: compiled, exact), the plan per remat policy (arguments + saved "
             "activations + one layer's working set), XLA:CPU's compiled peak without remat:",
             "", "| slice (devices x GiB) | mesh (data, model) | examples / device | arguments "
             "| none | dots_with_no_batch_dims | full | XLA:CPU none |", "|---|---|---|---|---|---|---|---|"]
    xxl = [r for r in rows if r["size"] == "t5_1_1_xxl"]
    for slice_name in dict.fromkeys(r["slice"] for r in sorted(xxl, key=lambda r: r["devices"])):
        by = {r["policy"]: r for r in xxl if r["slice"] == slice_name}
        r = by["none"]
        cells = [f"{by[p]['plan_peak'] / GIB:.1f}" + (" ✓" if fits(by[p]) else "")
                 for p in POLICIES if p in by]
        cpu = f"{r['cpu_peak'] / GIB:.1f}" if "cpu_peak" in r else "-"
        lines.append(f"| {slice_name} ({r['devices']} x {r['gib_per_device']}) | "
                     f"({r['mesh'][0]}, {r['mesh'][1]}) | {r['batch_per_device_step']} | "
                     f"{r['argument'] / GIB:.1f} | " + " | ".join(cells) + f" | {cpu} |")
    lines += ["", "✓: fits the slice's memory by the plan. Every size: the smallest listed v3 "
              "and v4 slice that fits (by devices; plan GiB per device) and one 80 GB GPU:", "",
              "| size | parameters | none | dots_with_no_batch_dims | full | 80 GB GPU none / dots / full |",
              "|---|---|---|---|---|---|"]
    for size in dict.fromkeys(r["size"] for r in rows):
        cells = []
        for p in POLICIES:
            found = []
            for gen in ("v3", "v4"):
                best = smallest_fit([r for r in rows if r["slice"].startswith(gen)], size, p,
                                    args.microbatches)
                found.append(f"{best['slice']} ({best['plan_peak'] / GIB:.1f})" if best
                             else f"no {gen} listed")
            cells.append(", ".join(found))
        gpu = {r["policy"]: r for r in rows if r["size"] == size and r["slice"].startswith("gpu")}
        gpu_cell = " / ".join((f"{gpu[p]['plan_peak'] / GIB:.0f}" + (" ✓" if fits(gpu[p]) else ""))
                              if p in gpu else "-" for p in POLICIES)
        params = rows[[r["size"] for r in rows].index(size)]["params"]
        lines.append(f"| `{size}` | {params / 1e9:.2f} B | " + " | ".join(cells) +
                     f" | {gpu_cell} |")
    lines += ["", README_END]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="*", help="gin/models names (default: all but world_*)")
    p.add_argument("--policies", nargs="*", default=list(POLICIES))
    p.add_argument("--compile_policies", nargs="*", default=None,
                   help="policies whose step is also compiled for the XLA:CPU figures "
                        "(default: none only; 'none' is always compiled: arguments and the "
                        "one-layer working set come from it)")
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--inputs_length", type=int, default=512)
    p.add_argument("--targets_length", type=int, default=16)
    p.add_argument("--prompt_length", type=int, default=100)
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--slices", nargs="*", help=f"subset of {[s[0] for s in SLICES]}")
    p.add_argument("--full_depth", action="store_true",
                   help="compile every row at full depth (slow) instead of extrapolating")
    p.add_argument("--probe_batch", type=int, default=2, help="batch of the depth probes")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--write_readme", action="store_true",
                   help="write the tables between the memory-plan markers of docs/scale.md")
    p.add_argument("--from_json", metavar="JSON",
                   help="with --write_readme: the rows of an earlier --json run, no compile")
    p.add_argument("--reuse_compiles", metavar="JSON",
                   help="take the compiled figures of an earlier --json run (same settings) "
                        "and only trace the residuals again")
    args = p.parse_args(argv)
    # the batch holds inputs_length tokens; PromptedT5 prepends the prompt, so the encoder
    # runs over prompt_length + inputs_length positions

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        text = readme_tables(saved["rows"], argparse.Namespace(**saved["settings"]))
        print(text)
        if args.write_readme:
            import readme_block

            readme_block.replace_block(DOCS_PAGE, README_BEGIN, README_END, text)
        return saved["rows"]

    import jax

    configs = model_configs(args.sizes)
    slices = [s for s in SLICES if args.slices is None or s[0] in args.slices]
    compile_policies = args.compile_policies or ["none"]
    rows, cache, traces = [], {}, {}
    reused = _compiled_from(args.reuse_compiles) if args.reuse_compiles else None
    t_start = time.time()

    def resid(cfg, policy, m, b, layers):
        """Residual bytes per device, linear in the per-shard batch: traced at 1 and 2."""
        def at(bb):  # traced once per batch and depth, split for every M
            key = (_shape_key(cfg), policy, bb, layers)
            if key not in traces:
                traces[key] = residuals(cfg, policy, None, bb, args,
                                        layers=None if layers == cfg.num_encoder_layers
                                        else layers)
            replicated, sharded = traces[key]
            return replicated + sharded / m
        # traced at batches 3 and 5 (no T5 dimension is 3 or 5, so an activation is told
        # apart by its leading batch dim), linear in between and beyond
        r3, r5 = at(3), at(5)
        return int(r3 + (r5 - r3) * (b - 3) / 2)

    for name, cfg in configs.items():
        mp = model_parallelism(cfg)
        plan = {}  # model_par -> {slice: (devices, gib, data, per-shard batch)}
        for slice_name, devices, gib in slices:
            m = min(mp, devices)
            data = devices // m
            if args.batch % data or (args.batch // data) % args.microbatches:
                continue
            plan.setdefault(m, {})[slice_name] = (devices, gib, data,
                                                  args.batch // data // args.microbatches)
        for m, entries in plan.items():
            batches = sorted({e[3] for e in entries.values()})
            if reused is not None:
                base = {b: reused[(name, m, b)] for b in batches}
                cpu = {"none": base}
            else:
                base = estimate(cfg, "none", m, batches, args, cache)
                cpu = {pol: (base if pol == "none" else
                             estimate(cfg, pol, m, batches, args, cache))
                       for pol in compile_policies}
            for policy in args.policies:
                for slice_name, (devices, gib, data, b) in entries.items():
                    r = base[b]
                    fixed = r["argument"] + r["output"] - r["alias"]
                    saved = resid(cfg, policy, m, b, cfg.num_encoder_layers)
                    saved1 = resid(cfg, "none", m, b, 1)
                    work = r["temp_1layer"] if policy != "none" else max(
                        r["temp_1layer"] - saved1, 0)
                    row = {"size": name, "params": _param_count(cfg), "policy": policy,
                           "slice": slice_name, "devices": devices, "gib_per_device": gib,
                           "mesh": [data, m], "batch_per_device_step": b,
                           "microbatches": args.microbatches,
                           "argument": r["argument"], "output": r["output"],
                           "alias": r["alias"], "residuals": saved,
                           "working_set": int(work), "plan_peak": int(fixed + saved + work),
                           "method": r["method"]}
                    if policy in cpu:
                        c = cpu[policy][b]
                        row.update(temp=c["temp"], compile_s=c["compile_s"],
                                   cpu_peak=c["argument"] + c["output"] - c["alias"] + c["temp"])
                    rows.append(row)
                    print(f"  {name} {slice_name} {policy}: residuals {saved / GIB:.2f} GiB, "
                          f"plan {row['plan_peak'] / GIB:.2f} GiB", file=sys.stderr, flush=True)
    elapsed = time.time() - t_start
    print(f"\nper-device memory (GiB) of the prompt-tuning train step, batch {args.batch} x "
          f"({args.inputs_length}+{args.prompt_length}) -> "
          f"{args.targets_length}, bf16 frozen weights, microbatches {args.microbatches}")
    header = (f"{'size':20s} {'slice':9s} {'mesh':>7s} {'b/dev':>5s} {'policy':33s} "
              f"{'args':>6s} {'saved':>7s} {'plan':>7s} {'cpu':>7s} fits(plan)")
    print(header)
    for r in rows:
        ok = "yes" if r["plan_peak"] <= r["gib_per_device"] * GIB else "no"
        cpu = f"{r['cpu_peak'] / GIB:7.2f}" if "cpu_peak" in r else f"{'-':>7s}"
        print(f"{r['size']:20s} {r['slice']:9s} {str(tuple(r['mesh'])):>7s} "
              f"{r['batch_per_device_step']:5d} {r['policy']:33s} {r['argument'] / GIB:6.2f} "
              f"{r['residuals'] / GIB:7.2f} {r['plan_peak'] / GIB:7.2f} {cpu} {ok}")
    print()
    for name in configs:
        for policy in args.policies:
            tpu = [r for r in rows if not r["slice"].startswith("gpu")]
            best = smallest_fit(tpu, name, policy, args.microbatches)
            gpu = [r for r in rows if r["slice"].startswith("gpu") and r["size"] == name
                   and r["policy"] == policy]
            gpu_text = "".join(f"; {r['slice']}: {r['plan_peak'] / GIB:.1f} GiB, "
                               f"{'fits' if r['plan_peak'] <= r['gib_per_device'] * GIB else 'no'}"
                               for r in gpu)
            print(f"{name} / {policy}: smallest TPU slice "
                  f"{best['slice'] + ' (%.1f GiB/device)' % (best['plan_peak'] / GIB) if best else 'none listed'}"
                  f"{gpu_text}")
    print(f"\n{len(cache)} compiles, {len(traces)} traces in {elapsed:.0f} s")
    if args.write_readme:
        import readme_block

        readme_block.replace_block(DOCS_PAGE, README_BEGIN, README_END,
                                   readme_tables(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "settings": vars(args), "elapsed_s": elapsed,
                       "slices": SLICES, "jax": jax.__version__,
                       "cpu": bench_env.cpu_model(), "backend": jax.default_backend()},
                      f, indent=1)
    return rows


if __name__ == "__main__":
    main()
