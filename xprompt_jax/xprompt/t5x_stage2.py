"""XPrompt's stage 2 for a prompt trained by `t5x/train.py`: importance scores, the masking
curve and the token-then-piece search on the stage-1 prompt of a T5X run checkpoint, then
the files the T5X rewind (gin/t5x/xprompt_rewind.gin) reads.

The frozen model *and* the stage-1 prompt (`target/prompt/prompt`) come from the T5X run
checkpoint (orbax or legacy, read without t5x by `xprompt_jax.checkpoints`) through the runs
layer's frozen-model loader; with `prompt_file` the prompt comes from that `.npy` instead
(e.g. the best step's numpy export: T5X keeps few checkpoints). The prompt length is taken
from the checkpoint. Candidates are scored on the dev split without retraining (the rewind
is a `t5x/train.py` run); `XPromptConfig.mask_variant` 'reversed' / 'random' write XPrompt's
counts from the lowest scorers / at random.

Writes to `output_dir`:
- `masks.npz`: `token_mask` `[m]`, `piece_mask` `[m, k]` (float32 0/1) - MASKS_PATH of
  gin/t5x/xprompt_rewind.gin;
- `rewound_prompt.npy`: the stage-1 prompt times the value mask `[m, e]` -
  REWOUND_PROMPT_PATH of gin/t5x/xprompt_rewind.gin;
- `scores.json` (importance of the full prompt), `search.json` (every candidate's dev
  result and mask), `report.json`, `report.md` (with the rewind command) and the plots.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from etils import epath

from ..errors import ConfigError
from ..evaluation.metrics import metric_name
from ..fileio import absolute, is_writer, save_npy_atomic, write_json_atomic
from ..runs.build import build_evaluator
from ..runs.config import RunConfig
from ..runs.flags import import_task_module
from ..runs.frozen import load_frozen_model
from ..runs.report import Section
from ..training import partitioning
from ..training.checkpointing import load_numpy_prompt
from . import pruning, report as report_lib, search
from .config import XPromptConfig
from .context import XPromptContext, masked_prompt_module
from .fixed_masks import MASKS_FILE, REWOUND_PROMPT_FILE, save_masks

logger = logging.getLogger("xprompt_jax")


def checkpoint_param_shape(t5x_checkpoint: str, path: Sequence[str] = ("prompt", "prompt")
                           ) -> Optional[Tuple[int, ...]]:
    """Shape of one parameter of a T5X checkpoint's `target`, from metadata only (no array
    data read); None if the checkpoint has no such parameter."""
    from ..checkpoints import find_t5x_checkpoint, paths
    from ..checkpoints import t5x_legacy, t5x_orbax, tree as tree_lib

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


def _step_of(path: str) -> Optional[int]:
    """N of the nearest `checkpoint_N` folder on `path` (itself included), or None."""
    for part in reversed(absolute(path).replace(os.sep, "/").split("/")):
        if part.startswith("checkpoint_") and part[len("checkpoint_"):].isdigit():
            return int(part[len("checkpoint_"):])
    return None


def stage1_label(t5x_checkpoint: str, prompt_file: Optional[str]):
    """The stage-1 step: the checkpoint's, or the `checkpoint_N` folder of `prompt_file`
    (a numpy export), else the prompt file's name."""
    from ..checkpoints import find_t5x_checkpoint, paths

    if prompt_file:
        step = _step_of(prompt_file)
        return f"prompt file {paths.basename(absolute(prompt_file))}" if step is None else step
    return _step_of(paths.dirname(find_t5x_checkpoint(absolute(t5x_checkpoint))[1]))


def _stage1_model(run: RunConfig, t5x_checkpoint: str, prompt_file: Optional[str]):
    """(model with the stage-1 prompt's length, the prompt from `prompt_file` or None)."""
    model = run.model
    prompt = masked_prompt_module(model)
    stage1_prompt = None
    if prompt_file:
        stage1_prompt = np.asarray(load_numpy_prompt(prompt_file), np.float32)
        shape = tuple(stage1_prompt.shape)
    else:
        shape = checkpoint_param_shape(t5x_checkpoint)
        if shape is None:
            raise ConfigError(f"{t5x_checkpoint}: no target/prompt/prompt parameter; pass the "
                              "checkpoint of a t5x/train.py run with gin/t5x/xprompt.gin (or "
                              "--prompt_file)")
    if len(shape) != 2 or shape[1] != model.config.emb_dim:
        raise ConfigError(f"stage-1 prompt has shape {shape}; expected "
                          f"[m, {model.config.emb_dim}] (emb_dim of the gin model size)")
    if shape[0] != prompt.length:
        logger.info("prompt length %d from the checkpoint (gin PROMPT_LENGTH was %d)",
                    shape[0], prompt.length)
        model = model.clone(prompt=prompt.clone(length=int(shape[0])))
    return model, stage1_prompt


def rewind_section(report) -> Section:
    """The next step below the report: the T5X rewind command with the written files."""
    bindings = report["rewind"]["bindings"]
    return Section(["", "## Next: rewind with t5x/train.py", "", "```",
                    "python -m t5x.train --gin_search_paths=$XP/gin/t5x,$XP/gin \\",
                    "  --gin_file=xprompt_rewind.gin --gin_file=models/<size>.gin \\",
                    f"  --gin.MASKS_PATH=\"'{bindings['MASKS_PATH']}'\" \\",
                    f"  --gin.REWOUND_PROMPT_PATH=\"'{bindings['REWOUND_PROMPT_PATH']}'\" \\",
                    f"  --gin.PROMPT_LENGTH={bindings['PROMPT_LENGTH']} \\",
                    "  --gin.MODEL_DIR=... --gin.MIXTURE_OR_TASK_NAME=... --gin.TRAIN_STEPS=...",
                    "```", ""])


def prune_t5x_checkpoint(run: RunConfig, config: XPromptConfig, *, t5x_checkpoint: str,
                         output_dir: str, prompt_file: Optional[str] = None
                         ) -> Dict[str, Any]:
    """Scores and prunes the stage-1 prompt of a T5X run checkpoint; writes masks, rewound
    prompt and report to `output_dir` (module docstring). Returns the report dict.

    `run`: the gin run of our own gin files (model size, xprompt.gin: the task, data and
    evaluation settings); its INITIAL_CHECKPOINT_PATH is not used (the frozen model comes
    from `t5x_checkpoint`)."""
    if config.rewind_each_candidate:
        raise ConfigError("REWIND_EACH_CANDIDATE=True needs our own trainer (python -m "
                          "xprompt_jax.xprompt); with T5X the rewind is a t5x/train.py run")
    if config.mask_variant == "length":
        raise ConfigError("MASK_VARIANT='length' is a fresh prompt of the surviving length: "
                          "run gin/t5x/prompt_tuning.gin with PROMPT_LENGTH instead")
    import_task_module(run.task_module, run.task_name)
    output_dir = absolute(output_dir)  # a gs:// URL stays one
    model, stage1_prompt = _stage1_model(run, t5x_checkpoint, prompt_file)
    run = run.replace(model=model, frozen=dataclasses.replace(
        run.frozen, initial_checkpoint_path=os.fspath(t5x_checkpoint), checkpoint_format="t5x"))
    # The run checkpoint holds the frozen weights and the stage-1 prompt.
    frozen = load_frozen_model(model, run.frozen, run.feature_lengths, run.data.seed)
    stage1_params = frozen.trainable
    if stage1_prompt is not None:
        stage1_params = {"prompt": {"prompt": stage1_prompt}}
    ctx = XPromptContext(run=run, model_dir=output_dir, frozen=frozen.frozen,
                         evaluator=build_evaluator(run),
                         batch_sharding=partitioning.batch_sharding(frozen.mesh),
                         progress=run.trainer.progress)
    m, k, embed_dim = ctx.length, ctx.pieces, ctx.embed_dim

    scorer = ctx.scorer(stage1_params, config.per_example)
    scores = scorer.score(np.ones(m, np.float32), np.ones((m, k), np.float32),
                          ctx.score_batches(), config.num_score_examples)
    curve = None
    if config.masking_curve:
        from .curve import masking_curve_result

        curve = masking_curve_result(ctx, stage1_params, scores.token, config.curve_ratios,
                                     config.curve_random_seeds, config.batched_search)
    result = search.search_masks(ctx, scorer, scores, stage1_params, config)
    result["chosen"] = search.variant_masks(result, scores, config.mask_variant,
                                            config.mask_seed)
    if curve is not None and curve["ratios"][0] == 0:
        stage1_eval = {"main_metric": curve["importance"][0]}
    else:
        with frozen.activate():
            stage1_eval = ctx.evaluator.evaluate(ctx.variables(stage1_params))
    token_mask = np.asarray(result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(result["chosen"]["piece_mask"], np.float32)
    values = pruning.value_mask(token_mask, piece_mask, embed_dim)
    rewound = np.where(values > 0, np.asarray(stage1_params["prompt"]["prompt"], np.float32),
                       np.float32(0.0))  # stage-1 prompt * value mask (no -0.0)

    checkpoint_step = stage1_label(t5x_checkpoint, prompt_file)
    masks_path = str(epath.Path(output_dir) / MASKS_FILE)
    prompt_path = str(epath.Path(output_dir) / REWOUND_PROMPT_FILE)
    report = {
        "model_dir": output_dir,
        "t5x_checkpoint": os.fspath(t5x_checkpoint),
        "prompt_file": prompt_file,
        "mask_variant": config.mask_variant,
        "prune_levels": list(config.prune_levels),
        "per_example_scores": config.per_example,
        "num_score_examples": scores.num_examples,
        "prompt_length": m, "num_pieces": k, "embed_dim": embed_dim,
        "stage1": {"best_step": checkpoint_step,
                   "eval": {"main_metric": stage1_eval.get("main_metric"),
                            "metrics": stage1_eval.get("metrics")}},
        "search": result,
        "masking_curve": curve,
        "protocol": report_lib.protocol(ctx, config, result, checkpoint_step, None, False,
                                        metric_name(ctx.evaluator.main_metric_fn),
                                        scores.num_examples),
        "final_eval": {},
        "parameters": report_lib.parameters(token_mask, piece_mask, m, embed_dim),
        "outputs": {"masks": masks_path, "rewound_prompt": prompt_path},
        "rewind": {"gin_file": "xprompt_rewind.gin",
                   "bindings": {"MASKS_PATH": masks_path, "REWOUND_PROMPT_PATH": prompt_path,
                                "PROMPT_LENGTH": m}},
    }
    if is_writer():
        save_masks(masks_path, token_mask, piece_mask)
        save_npy_atomic(prompt_path, rewound, np.float32)
        write_json_atomic(epath.Path(output_dir) / "scores.json", scores.to_json())
        write_json_atomic(epath.Path(output_dir) / "search.json", result)
    return report_lib.write_report(output_dir, report, scores, token_mask, piece_mask,
                                   [rewind_section])


def prune_configured(t5x_checkpoint: str, output_dir: str,
                     prompt_file: Optional[str] = None) -> Dict[str, Any]:
    """`prune_t5x_checkpoint` with the run and XPrompt settings of the parsed gin files.

    Our gin files require MODEL_DIR: here it is `output_dir`. PROMPT_INIT becomes
    U[-0.5, 0.5]: the prompt is read from the checkpoint, so an initializer that reads an
    embedding (xprompt.gin's sampled vocabulary) would only load a model once more (or
    fail: INITIAL_CHECKPOINT_PATH is not used here)."""
    import gin

    from .. import gin_utils
    from ..runs.config import configured_run

    with gin.unlock_config():
        gin.parse_config("from __gin__ import dynamic_registration\n"
                         "from xprompt_jax.prompts import initializers\n"
                         "PROMPT_INIT = @initializers.uniform()\n"
                         f"MODEL_DIR = {absolute(output_dir)!r}")
    return gin_utils.call_configured(
        lambda: prune_t5x_checkpoint(configured_run(), gin_utils.configured(XPromptConfig)(),
                                     t5x_checkpoint=t5x_checkpoint, output_dir=output_dir,
                                     prompt_file=prompt_file), "xprompt_jax.prune")
