"""XPrompt pruning of a prompt trained by `t5x/train.py` (stage 2 of XPrompt with T5X).

    python -m xprompt_jax.prune --t5x_checkpoint=$RUN1/checkpoint_1030000 \
        [--prompt_file=$RUN1/numpy_checkpoints/checkpoint_<best>/prompt.prompt.npy] \
        --gin_file=models/t5_1_1_base.gin --gin_file=xprompt.gin \
        --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte'" --output_dir=$PRUNE

Reads the frozen model *and* the stage-1 prompt (`target/prompt/prompt`) from a T5X run
checkpoint (orbax or legacy, read without t5x by `xprompt_jax.checkpoints`); with
`--prompt_file` the prompt comes from that `.npy` instead (e.g. the best step's numpy
export: T5X keeps few checkpoints). Then, as our own pipeline does
(`xprompt_jax.xprompt.pipeline`, stages "scores" and "search"): importance scores of the
full prompt on NUM_SCORE_EXAMPLES training examples, the masking curve (MASKING_CURVE),
token-level pruning over TOKEN_RATIOS (scores recomputed on the survivors; the unpruned
prompt is not a candidate unless SEARCH_INCLUDE_UNPRUNED), candidates scored on the dev
split without retraining, then piece-level pruning over PIECE_RATIOS on the best token
mask; MASK_VARIANT 'reversed' / 'random' write XPrompt's counts from the lowest scorers /
at random. PROMPT_INIT is not used (the prompt comes from the checkpoint).

Gin: our own files (not gin/t5x): a `models/<size>.gin` and `xprompt.gin` - they give the
model, the task and data settings (TASK_FEATURE_LENGTHS, BATCH_SIZE, EVAL_MODE, ...) and
the pipeline settings bound to `run_pipeline` (NUM_SCORE_EXAMPLES, PER_EXAMPLE_SCORES,
TOKEN_RATIOS, PIECE_RATIOS, PIECE_RANKING, PRUNE_LEVELS, MASK_VARIANT, MASK_SEED). The
prompt length is taken from the checkpoint (PROMPT_LENGTH is overridden to match).
INITIAL_CHECKPOINT_PATH is not used (the frozen model comes from --t5x_checkpoint).

Writes to --output_dir:
- `masks.npz`: `token_mask` `[m]`, `piece_mask` `[m, k]` (float32 0/1) - MASKS_PATH of
  gin/t5x/xprompt_rewind.gin;
- `rewound_prompt.npy`: the stage-1 prompt times the value mask `[m, e]` -
  REWOUND_PROMPT_PATH of gin/t5x/xprompt_rewind.gin;
- `scores.json` (importance of the full prompt), `search.json` (every candidate's dev
  result and mask), `report.json`, `report.md` and the plots of our pipeline's report.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("xprompt_jax")

# run_pipeline settings that mean something here (the rest - model_dir, rewind_*,
# stage1_* - belong to our own pipeline's training stages).
PIPELINE_SETTINGS = ("num_score_examples", "per_example", "token_ratios", "piece_ratios",
                     "piece_ranking", "prune_levels", "mask_variant", "mask_seed",
                     "batched_search", "search_include_unpruned", "masking_curve",
                     "curve_ratios", "curve_random_seeds")


# ----------------------------------------------------------------------------- checkpoint
def checkpoint_param_shape(t5x_checkpoint: str, path: Sequence[str] = ("prompt", "prompt")
                           ) -> Optional[Tuple[int, ...]]:
    """Shape of one parameter of a T5X checkpoint's `target`, from metadata only (no array
    data read); None if the checkpoint has no such parameter."""
    from .checkpoints import find_t5x_checkpoint, paths
    from .checkpoints import t5x_legacy, t5x_orbax, tree as tree_lib

    fmt, location = find_t5x_checkpoint(paths.absolute(paths.fspath(t5x_checkpoint)))
    key = tuple(path)
    if fmt == "orbax":
        handler = t5x_orbax._handler()
        try:
            target = t5x_orbax._metadata_tree(handler, location)["target"]
        finally:
            close = getattr(handler, "close", None)
            if callable(close):
                close()
        md = tree_lib.flatten(target).get(key)
        return None if md is None else t5x_orbax._shape(md)
    raw = t5x_legacy.read_msgpack(location)
    target, _ = t5x_legacy._split(raw, location)
    flat = tree_lib.flatten(target, is_leaf=t5x_legacy.is_tensorstore_spec)
    if key not in flat:
        return None
    leaves = t5x_legacy._open_leaves({key: flat[key]}, paths.dirname(location))
    return tuple(leaves[key].shape)


def _checkpoint_step(t5x_checkpoint: str) -> Optional[int]:
    """N of the `checkpoint_N` directory that holds the checkpoint, or None."""
    from .checkpoints import find_t5x_checkpoint

    location = find_t5x_checkpoint(os.path.abspath(os.fspath(t5x_checkpoint)))[1]
    for name in (os.path.basename(os.path.dirname(location)), os.path.basename(location)):
        if name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit():
            return int(name[len("checkpoint_"):])
    return None


# ----------------------------------------------------------------------------- gin
def pipeline_settings() -> Dict[str, Any]:
    """The gin bindings of `xprompt_jax.xprompt.pipeline.run_pipeline` (xprompt.gin) that
    apply to pruning; {} when the gin files bind none."""
    import gin

    from .xprompt import pipeline

    try:
        bound = gin.get_bindings(pipeline.run_pipeline)
    except (ValueError, KeyError):
        return {}
    if bound.get("rewind_each_candidate"):
        raise ValueError("REWIND_EACH_CANDIDATE=True needs our own trainer (python -m "
                         "xprompt_jax.xprompt); with T5X the rewind is a t5x/train.py run")
    return {k: bound[k] for k in PIPELINE_SETTINGS if k in bound}


def _neutral_prompt_init() -> None:
    """Binds PROMPT_INIT to U[-0.5, 0.5]: the stage-1 prompt is read from the checkpoint, so
    an initializer that reads an embedding (xprompt.gin's sampled vocabulary) would only
    load the model once more (or fail: INITIAL_CHECKPOINT_PATH is not used here)."""
    import gin

    with gin.unlock_config():
        gin.parse_config("from __gin__ import dynamic_registration\n"
                         "from xprompt_jax.prompts import initializers\n"
                         "PROMPT_INIT = @initializers.uniform()")


def _stage1_label(t5x_checkpoint: str, prompt_file: Optional[str]):
    """The stage-1 step: the checkpoint's, or the `checkpoint_N` folder of `prompt_file`
    (a numpy export), else the prompt file's name."""
    if not prompt_file:
        return _checkpoint_step(t5x_checkpoint)
    for part in reversed(os.path.normpath(os.path.abspath(prompt_file)).split(os.sep)):
        if part.startswith("checkpoint_") and part[len("checkpoint_"):].isdigit():
            return int(part[len("checkpoint_"):])
    return f"prompt file {os.path.basename(prompt_file)}"


def _configured_model():
    """The model bound to `build_trainer.model` (MODEL of our gin files)."""
    import gin

    from .train import build_trainer

    _neutral_prompt_init()
    try:
        model = gin.get_bindings(build_trainer).get("model")
    except (ValueError, KeyError):
        model = None
    if model is None or model is gin.REQUIRED:
        raise ValueError("no MODEL in the gin config: pass our gin files, e.g. "
                         "--gin_file=models/<size>.gin --gin_file=xprompt.gin")
    return model


# ----------------------------------------------------------------------------- context
def _context(output_dir: str, trainer):
    """A `pipeline.PipelineContext` around an already built trainer (no stage-1 training)."""
    from .xprompt import pipeline

    class _PruneContext(pipeline.PipelineContext):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.model_dir = output_dir
            self.trainer = trainer
            self.model = trainer.model
            self.prompt = pipeline.masked_prompt_module(self.model)
            self.length, self.pieces = self.prompt.length, self.prompt.num_pieces
            self.embed_dim = self.model.config.emb_dim
            if trainer.evaluator is None:
                raise ValueError("the XPrompt search scores candidates on the dev split: set "
                                 "EVAL_PERIOD (an evaluator is needed)")

    return _PruneContext()


def _write_json(path: str, obj: Any) -> None:
    from .training.checkpointing import write_json_atomic

    write_json_atomic(path, json.loads(json.dumps(obj, default=lambda o: np.asarray(o).tolist())))


def _save_npy(path: str, value: np.ndarray) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(value, np.float32), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main work
def prune_t5x_checkpoint(*, t5x_checkpoint: str, output_dir: str,
                         prompt_file: Optional[str] = None, num_score_examples: int = 1024,
                         per_example: bool = True, token_ratios: Sequence[float] = None,
                         piece_ratios: Sequence[float] = None,
                         piece_ranking: str = "per_token",
                         prune_levels: Sequence[str] = ("token", "piece"),
                         mask_variant: str = "xprompt", mask_seed: int = 0,
                         batched_search: bool = True, search_include_unpruned: bool = False,
                         masking_curve: bool = True, curve_ratios: Sequence[float] = None,
                         curve_random_seeds: int = 3, model=None,
                         **build_overrides) -> Dict[str, Any]:
    """Scores and prunes the prompt of a T5X run checkpoint; writes masks, rewound prompt
    and report to `output_dir` (see module doc). Returns the report dict.

    `model` defaults to the gin-configured MODEL (a PromptedT5 with a MaskedSoftPrompt);
    its prompt length is set from the checkpoint (or `prompt_file`). Other trainer settings
    (task, feature lengths, batch size, evaluation) come from the gin bindings of
    `xprompt_jax.train.build_trainer`; `build_overrides` override them.
    """
    import jax

    from . import gin_utils
    from .train import build_trainer
    from .training.checkpointing import load_numpy_prompt
    from .xprompt import pipeline, pruning, report as report_lib
    from .xprompt.fixed_masks import MASKS_FILE, REWOUND_PROMPT_FILE, save_masks

    if token_ratios is None:
        token_ratios = pruning.default_ratios()
    if piece_ratios is None:
        piece_ratios = pruning.default_ratios()
    if mask_variant not in ("xprompt", "reversed", "random"):
        raise ValueError(f"mask_variant {mask_variant!r}: the pruning CLI writes masks for "
                         "'xprompt', 'reversed' or 'random' ('length' is a fresh prompt of the "
                         "surviving length: run gin/t5x/prompt_tuning.gin with PROMPT_LENGTH)")
    pipeline.check_search_settings(token_ratios, piece_ratios, piece_ranking, prune_levels)
    levels = tuple(prune_levels)
    token_ratios = pruning.ratios_checked(token_ratios, "TOKEN_RATIOS")
    piece_ratios = pruning.ratios_checked(piece_ratios, "PIECE_RATIOS")
    curve_ratios = pipeline.check_curve_ratios(
        pipeline.CURVE_RATIOS if curve_ratios is None else curve_ratios)
    output_dir = os.path.abspath(os.fspath(output_dir))
    os.makedirs(output_dir, exist_ok=True)

    # ---- the model, its prompt length matched to the stage-1 prompt
    model = _configured_model() if model is None else model
    prompt = pipeline.masked_prompt_module(model)
    stage1_prompt = None
    if prompt_file:
        stage1_prompt = np.asarray(load_numpy_prompt(prompt_file), np.float32)
        shape = tuple(stage1_prompt.shape)
    else:
        shape = checkpoint_param_shape(t5x_checkpoint)
        if shape is None:
            raise ValueError(f"{t5x_checkpoint}: no target/prompt/prompt parameter; pass the "
                             "checkpoint of a t5x/train.py run with gin/t5x/xprompt.gin (or "
                             "--prompt_file)")
    if len(shape) != 2 or shape[1] != model.config.emb_dim:
        raise ValueError(f"stage-1 prompt has shape {shape}; expected [m, {model.config.emb_dim}]"
                         " (emb_dim of the gin model size)")
    if shape[0] != prompt.length:
        logger.info("prompt length %d from the checkpoint (gin PROMPT_LENGTH was %d)", shape[0],
                    prompt.length)
        model = model.clone(prompt=prompt.clone(length=int(shape[0])))

    # ---- trainer around the run checkpoint (frozen weights + prompt), never trained
    overrides: Dict[str, Any] = dict(model=model, model_dir=os.path.join(output_dir, "work"),
                                     initial_checkpoint_path=os.fspath(t5x_checkpoint),
                                     checkpoint_format="t5x", train_steps=1,
                                     train_epochs=None)  # never trained
    if stage1_prompt is not None:
        overrides["initial_trainable"] = {"prompt": {"prompt": stage1_prompt}}
    overrides.update(build_overrides)
    # build_trainer reads a run checkpoint (frozen weights + prompt) as its pretrained one.
    trainer = gin_utils.configured(build_trainer)(**overrides)
    ctx = _context(output_dir, trainer)
    stage1_params = jax.device_get(trainer.state.params)
    m, k, embed_dim = ctx.length, ctx.pieces, ctx.embed_dim
    checkpoint_step = _stage1_label(t5x_checkpoint, prompt_file)

    # ---- importance scores, masking curve, token-then-piece search (our pipeline's code)
    scorer = ctx.scorer(stage1_params, per_example)
    ones_t, ones_p = np.ones(m, np.float32), np.ones((m, k), np.float32)
    initial = scorer.score(ones_t, ones_p, ctx.score_batches(0), num_score_examples)
    curve = None
    if masking_curve:
        curve = pipeline.masking_curve_result(ctx, stage1_params, initial.token, curve_ratios,
                                              curve_random_seeds, batched_search)
    search_result = pipeline.search_masks(ctx, scorer, initial, stage1_params, token_ratios,
                                          piece_ratios, piece_ranking, levels,
                                          num_score_examples, batched_search, False, None,
                                          include_unpruned=search_include_unpruned)
    search_result["chosen"] = pipeline.variant_masks(search_result, initial, mask_variant,
                                                     mask_seed)
    if curve is not None and curve["ratios"][0] == 0:
        stage1_eval = {"main_metric": curve["importance"][0]}
    else:
        stage1_eval = trainer.evaluate(stage1_params)
    token_mask = np.asarray(search_result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(search_result["chosen"]["piece_mask"], np.float32)
    values = pruning.value_mask(token_mask, piece_mask, embed_dim)
    rewound = np.where(values > 0, np.asarray(stage1_params["prompt"]["prompt"], np.float32),
                       np.float32(0.0))  # stage-1 prompt * value mask (no -0.0)

    candidates = (search_result.get("token_candidates") or
                  search_result.get("piece_candidates") or [])
    unpruned = candidates[0] if candidates else {}
    masks_path = os.path.join(output_dir, MASKS_FILE)
    prompt_path = os.path.join(output_dir, REWOUND_PROMPT_FILE)
    report = {
        "model_dir": output_dir,
        "t5x_checkpoint": os.fspath(t5x_checkpoint),
        "prompt_file": prompt_file,
        "mask_variant": mask_variant,
        "prune_levels": list(levels),
        "per_example_scores": per_example,
        "num_score_examples": initial.num_examples,
        "prompt_length": m, "num_pieces": k, "embed_dim": embed_dim,
        "stage1": {"best_step": checkpoint_step,
                   "eval": {"main_metric": stage1_eval.get("main_metric"),
                            "metrics": stage1_eval.get("metrics")}},
        "search": search_result,
        "masking_curve": curve,
        "protocol": pipeline.protocol(
            ctx, search_result, checkpoint_step, None, token_ratios, piece_ratios,
            piece_ranking, levels, search_include_unpruned, False, mask_variant,
            getattr(trainer.evaluator.main_metric_fn, "name", "task default")),
        "final_eval": {},
        "parameters": {
            "prompt_tuning": m * embed_dim,
            "xprompt": pruning.trainable_parameter_count(token_mask, piece_mask, embed_dim),
            "surviving_tokens": int((token_mask > 0).sum()),
            "surviving_pieces": pipeline.kept_pieces(token_mask, piece_mask),
        },
        "outputs": {"masks": masks_path, "rewound_prompt": prompt_path},
        "rewind": {"gin_file": "xprompt_rewind.gin",
                   "bindings": {"MASKS_PATH": masks_path, "REWOUND_PROMPT_PATH": prompt_path,
                                "PROMPT_LENGTH": m}},
    }
    if jax.process_index() == 0:
        save_masks(masks_path, token_mask, piece_mask)
        _save_npy(prompt_path, rewound)
        _write_json(os.path.join(output_dir, "scores.json"), initial.to_json())
        _write_json(os.path.join(output_dir, "search.json"), search_result)
        report_lib.write_report(output_dir, report, initial, token_mask, piece_mask)
        _finish_markdown(os.path.join(output_dir, "report.md"), report)
        _release_run_lock(os.path.join(output_dir, "work"))
        _remove_empty_dirs(os.path.join(output_dir, "work"))
    return report


def _release_run_lock(model_dir: str) -> None:
    """Releases the unused trainer's MODEL_DIR lock (the trainer only releases it at the
    end of `run()`, which pruning never calls), where the trainer takes one."""
    try:
        from .training import run_lock
    except ImportError:
        return
    run_lock.release(model_dir)


def _remove_empty_dirs(top: str) -> None:
    """Removes `top` if it holds nothing but empty directories (the unused trainer's)."""
    for root, _, files in os.walk(top):
        if files:
            return
    for root, dirs, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
        os.rmdir(root)


def _finish_markdown(path: str, report: Mapping[str, Any]) -> None:
    """Our pipeline's report.md, with the rewind row replaced by the next step."""
    with open(path) as f:
        lines = f.read().splitlines()
    params = report["parameters"]
    out = []
    for line in lines:
        if line.startswith("| XPrompt (rewound"):
            line = (f"| XPrompt masks (before rewinding; rewind with t5x/train.py) | - | "
                    f"{params['xprompt']} |")
        out.append(line)
    bindings = report["rewind"]["bindings"]
    out += ["", "## Next: rewind with t5x/train.py", "", "```",
            "python -m t5x.train --gin_search_paths=$XP/gin/t5x,$XP/gin \\",
            "  --gin_file=xprompt_rewind.gin --gin_file=models/<size>.gin \\",
            f"  --gin.MASKS_PATH=\"'{bindings['MASKS_PATH']}'\" \\",
            f"  --gin.REWOUND_PROMPT_PATH=\"'{bindings['REWOUND_PROMPT_PATH']}'\" \\",
            f"  --gin.PROMPT_LENGTH={bindings['PROMPT_LENGTH']} \\",
            "  --gin.MODEL_DIR=... --gin.MIXTURE_OR_TASK_NAME=... --gin.TRAIN_STEPS=...",
            "```", ""]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- CLI
def _define_flags(flags) -> None:
    if "t5x_checkpoint" in flags.FLAGS:
        return
    flags.DEFINE_string("t5x_checkpoint", None, "a T5X run checkpoint (checkpoint_N directory "
                        "of t5x/train.py, orbax or legacy; or a MODEL_DIR: latest step)")
    flags.DEFINE_string("output_dir", None, "where masks.npz, rewound_prompt.npy and the "
                        "report are written")
    flags.DEFINE_string("prompt_file", None, "optional stage-1 prompt .npy (e.g. "
                        "MODEL_DIR/numpy_checkpoints/checkpoint_<best>/prompt.prompt.npy) "
                        "instead of the checkpoint's target/prompt/prompt")


def main(argv: Sequence[str]) -> Dict[str, Any]:
    import gin

    from . import gin_utils
    from .train import configure_from_argv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    flags_obj = configure_from_argv(argv, extra_flags=_define_flags)
    missing = [name for name in ("t5x_checkpoint", "output_dir") if not flags_obj[name].value]
    if missing:
        raise gin_utils.GinConfigError("xprompt_jax.prune: required flags not given: " +
                                       ", ".join(f"--{name}" for name in missing))
    # Our gin files require MODEL_DIR; here it is the output directory.
    gin.parse_config(f"MODEL_DIR = {os.path.abspath(flags_obj.output_dir)!r}")
    report = prune_t5x_checkpoint(t5x_checkpoint=flags_obj.t5x_checkpoint,
                                  output_dir=flags_obj.output_dir,
                                  prompt_file=flags_obj.prompt_file, **pipeline_settings())
    print(json.dumps({"output_dir": report["model_dir"], "chosen": report["search"]["chosen"]
                      .get("name"), "parameters": report["parameters"],
                      "outputs": report["outputs"]}, indent=2, default=str))
    print(f"report: {os.path.join(report['model_dir'], 'report.md')}")
    return report


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.prune")


if __name__ == "__main__":
    console_entry()
