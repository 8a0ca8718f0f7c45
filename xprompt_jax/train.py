"""Prompt-tuning CLI, T5X style.

    python -m xprompt_jax.train --gin_file=prompt_tuning.gin \
        --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte_local'" \
        --gin.INITIAL_CHECKPOINT_PATH="'/path/to/checkpoint_1100000'"

Flags as t5x/train.py: --gin_file (repeatable), --gin.NAME=VALUE, --gin_bindings,
--gin_search_paths, --tfds_data_dir.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import jax

from . import gin_utils
from .training import distributed, partitioning
from .training.data import DataConfig
from .training.evaluation import EvalConfig, Evaluator, main_metric_fn
from .training.pretrained import load_pretrained_params
from .training.train_step import LossConfig
from .training.trainer import Trainer, TrainerConfig, check_feature_lengths, dummy_batch

logger = logging.getLogger("xprompt_jax")


def import_task_module(module: Optional[str]) -> None:
    """Imports the module that registers MIXTURE_OR_TASK_NAME (T5X's MIXTURE_OR_TASK_MODULE)."""
    if module:
        importlib.import_module(module)


def frozen_shardings(model, feature_lengths, mesh, rules, trainable_regex):
    """Shardings of the frozen (pretrained) params from the model's logical axes, as a
    lookup `path -> Sharding | None` for the checkpoint loaders."""
    from .training.params import split_params

    batch = dummy_batch(feature_lengths)
    abstract = jax.eval_shape(
        lambda r: model.init(r, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                             batch["decoder_target_tokens"], enable_dropout=False),
        jax.random.PRNGKey(0))
    shardings = partitioning.param_shardings(abstract["params"], abstract.get("params_axes"),
                                             mesh, rules)
    frozen = split_params(shardings, trainable_regex)[1]
    return sharding_lookup(frozen)


def sharding_lookup(shardings_tree):
    """`path -> Sharding | None` over a shardings tree: parameters the tree does not name
    (e.g. the prompt inside a T5X *run* checkpoint) are read to the host, and the trainer
    places them with the trainable shardings."""
    from .checkpoints import tree as tree_lib

    flat = {tree_lib.path_str(p): s for p, s in tree_lib.flatten(shardings_tree).items()}
    return lambda path: flat.get(path)


def build_trainer(*, model, optimizer, model_dir: str, mixture_or_task_name: str,
                  task_feature_lengths: Mapping[str, int],
                  mixture_or_task_module: Optional[str] = None,
                  initial_checkpoint_path: Optional[str] = None,
                  checkpoint_format: str = "auto", batch_size: int = 32,
                  train_steps: int = 30000, eval_period: Optional[int] = 1000,
                  save_period: Optional[int] = None, keep_checkpoints: int = 3,
                  patience: Optional[int] = None, eval_mode: str = "rank_classification",
                  eval_split: str = "validation", eval_batch_size: Optional[int] = None,
                  max_eval_examples: Optional[int] = None, trainable_regex: str = r".*prompt.*",
                  frozen_dtype: Optional[str] = None, num_microbatches: int = 1,
                  mesh_shape: Sequence[int] = (-1, 1), activation_partitioning_dims: int = 1,
                  parameter_partitioning_dims: int = 1, label_smoothing: float = 0.0,
                  z_loss: float = 0.0, loss_normalization: Any = "mean_tokens", seed: int = 0,
                  data_seed: Optional[int] = None, progress: Optional[bool] = None,
                  on_nonfinite: str = "stop", force: bool = False,
                  save_interval_s: Optional[float] = 300.0,
                  save_numpy: bool = True, log_period: int = 10,
                  main_metric: Any = None, train_epochs: Optional[float] = None,
                  eval_heldout_split: Optional[str] = None,
                  record_prompt_norm: bool = False,
                  **trainer_kwargs) -> Trainer:
    """Builds a `Trainer` from gin-level settings (each argument is a gin binding).

    `train_epochs` (gin TRAIN_EPOCHS), when set, replaces `train_steps` by
    ceil(epochs * n_train / batch_size) (`training/epochs.py`); `main_metric` (gin
    MAIN_METRIC) overrides the task's dev selection metric (`evaluation.main_metric_fn`);
    `eval_heldout_split` (gin EVAL_HELDOUT_SPLIT, e.g. 'test' of a `_heldout` task) also
    scores that split whenever the selection metric improves (`training/heldout_eval.py`);
    `record_prompt_norm` (gin RECORD_PROMPT_NORM) keeps EPT's mu_t of every step
    (`analysis/prompt_norm.py`; `train` writes and plots it)."""
    gin_utils.check_required("train", dict(
        model=model, optimizer=optimizer, model_dir=model_dir,
        mixture_or_task_name=mixture_or_task_name, task_feature_lengths=task_feature_lengths,
        initial_checkpoint_path=initial_checkpoint_path))
    import_task_module(mixture_or_task_module)
    check_feature_lengths(task_feature_lengths)  # before loading anything
    if train_epochs is not None:
        from .training.epochs import train_steps_from_epochs

        train_steps = train_steps_from_epochs(train_epochs, mixture_or_task_name, batch_size)
        logger.info("TRAIN_EPOCHS=%s at batch %d: %d steps", train_epochs, batch_size,
                    train_steps)
    trainer_config = TrainerConfig(
        model_dir=model_dir, num_steps=train_steps, eval_period=eval_period,
        save_period=save_period, keep_checkpoints=keep_checkpoints, patience=patience,
        log_period=log_period, seed=seed, trainable_regex=trainable_regex,
        frozen_dtype=frozen_dtype, num_microbatches=num_microbatches,
        mesh_shape=tuple(mesh_shape), activation_partitioning_dims=activation_partitioning_dims,
        parameter_partitioning_dims=parameter_partitioning_dims, save_numpy=save_numpy,
        progress=progress, on_nonfinite=on_nonfinite, force=force,
        save_interval_s=save_interval_s)
    data_config = DataConfig(mixture_or_task_name, dict(task_feature_lengths), batch_size,
                             seed=seed if data_seed is None else data_seed)
    pretrained = None
    if initial_checkpoint_path:
        mesh = partitioning.make_mesh(trainer_config.mesh_shape)
        rules = partitioning.standard_logical_axis_rules(activation_partitioning_dims,
                                                         parameter_partitioning_dims)
        shardings = frozen_shardings(model, task_feature_lengths, mesh, rules, trainable_regex)
        pretrained = load_pretrained_params(initial_checkpoint_path, checkpoint_format,
                                            shardings=shardings)
    evaluator = None
    if eval_period and trainer_kwargs.get("bank_mode") == "ids_in_data":
        from .training.bank_tasks import MultiTaskBankEvaluator

        evaluator = MultiTaskBankEvaluator(
            model, trainer_kwargs["bank_tasks"], task_feature_lengths,
            EvalConfig(mode=eval_mode, split=eval_split, batch_size=eval_batch_size or batch_size,
                       max_examples=max_eval_examples), model_dir=model_dir)
    elif eval_period:
        evaluator = Evaluator(model, mixture_or_task_name, task_feature_lengths,
                              EvalConfig(mode=eval_mode, split=eval_split,
                                         batch_size=eval_batch_size or batch_size,
                                         max_examples=max_eval_examples),
                              main_metric_fn=main_metric_fn(mixture_or_task_name, main_metric))
        if eval_heldout_split:
            from .training.heldout_eval import SelectionWithHeldout

            evaluator = SelectionWithHeldout(evaluator, Evaluator(
                model, mixture_or_task_name, task_feature_lengths,
                dataclasses.replace(evaluator.config, split=eval_heldout_split),
                main_metric_fn=main_metric_fn(mixture_or_task_name, main_metric)))
    from .prompts import bank as bank_lib

    if bank_lib.num_prompts(model):  # a PromptBank: each prompt trains as if alone
        from .training import bank_training

        optimizer, evaluator, loss_normalization = bank_training.bank_trainer_parts(
            model, optimizer, evaluator, loss_normalization, trainer_kwargs)
    recorder = None
    if record_prompt_norm and "step_callback" not in trainer_kwargs:
        from .analysis.prompt_norm import PromptNormRecorder

        recorder = trainer_kwargs["step_callback"] = PromptNormRecorder()
    trainer = Trainer(model, optimizer, data_config, trainer_config,
                      pretrained_params=pretrained, evaluator=evaluator,
                      loss_config=LossConfig(label_smoothing, z_loss, loss_normalization),
                      **trainer_kwargs)
    trainer.prompt_norm_recorder = recorder
    if getattr(evaluator, "step_fn", False) is None:  # MultiTaskBankEvaluator
        evaluator.step_fn = lambda: trainer.state.step
    return trainer


def write_run_reports(trainer, summary: Mapping[str, Any]) -> None:
    """report.json / report.md (selection + held-out results of the best checkpoint,
    nearest vocabulary pieces of its prompt) and, when recorded, EPT's mu_t plot."""
    from .training import heldout_eval

    model_dir = trainer.config.model_dir
    task_name = trainer.data_config.mixture_or_task_name
    writer = jax.process_index() == 0
    recorder = getattr(trainer, "prompt_norm_recorder", None)
    if recorder is not None and writer:
        from .analysis import prompt_norm

        recorder.write(model_dir)
        prompt_norm.plot_prompt_norm(model_dir, title=task_name)
    interp = None
    try:  # every process restores (collective); process 0 writes
        if summary.get("best_step") is not None:
            trainer.restore(summary["best_step"])
        interp = heldout_eval.trainer_interpretability(trainer, task_name)
    except Exception as e:  # pylint: disable=broad-except  (the run itself finished)
        logger.warning("nearest-token analysis skipped: %s", e)
    if writer:
        heldout_eval.write_run_report(model_dir, heldout_eval.run_report(summary, task_name,
                                                                     interp))




# Macros that may change when a run is resumed (a longer run, other eval/save cadence,
# moved data); any other difference from the saved config.gin refuses the resume.
RESUMABLE_CHANGES = ("TRAIN_STEPS", "TRAIN_EPOCHS", "EVAL_PERIOD", "SAVE_PERIOD",
                     "LOG_PERIOD", "KEEP_CHECKPOINTS", "PATIENCE", "MAX_EVAL_EXAMPLES",
                     "MODEL_DIR", "ON_NONFINITE", "WORLD_DIR", "SUPERGLUE_DIR", "GLUE_DIR",
                     "MRQA_DIR")
CONFIG_FILE = "config.gin"
CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _config_lines(text: str) -> list:
    skip = tuple(f"{name} =" for name in RESUMABLE_CHANGES)
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
            and not line.strip().startswith(skip)]


def config_differences(old: str, new: str) -> list:
    """'old -> new' descriptions of the lines that differ (RESUMABLE_CHANGES ignored)."""
    import difflib

    out = []
    matcher = difflib.SequenceMatcher(a=_config_lines(old), b=_config_lines(new))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            before = " | ".join(matcher.a[i1:i2]) or "(none)"
            after = " | ".join(matcher.b[j1:j2]) or "(none)"
            out.append(f"{before} -> {after}")
    return out


def record_config(model_dir: str, config_text: str, resume_step: Optional[int],
                  allow_config_change: bool = False) -> None:
    """Writes MODEL_DIR/config.gin atomically. Resuming (`resume_step` not None) with a
    config that differs from the saved one raises ConfigError, or with
    `allow_config_change` keeps the old file as `config.until_step_<N>.gin` and appends
    `{step, time, changes}` to config_changes.jsonl."""
    from .errors import ConfigError
    from .training.checkpointing import write_text_atomic

    path = os.path.join(model_dir, CONFIG_FILE)
    if resume_step is not None and os.path.exists(path):
        with open(path) as f:
            old = f.read()
        changes = config_differences(old, config_text)
        if changes and not allow_config_change:
            shown = "; ".join(changes[:3]) + (" ..." if len(changes) > 3 else "")
            raise ConfigError(f"{path}: resuming at step {resume_step} with a different "
                              f"config ({shown}); use the saved settings, a new MODEL_DIR, "
                              "or --allow_config_change to record the change")
        if changes and jax.process_index() == 0:
            import time

            logger.warning("config changed at step %d (--allow_config_change): %s",
                           resume_step, "; ".join(changes))
            write_text_atomic(os.path.join(model_dir, f"config.until_step_{resume_step}.gin"),
                              old)
            with open(os.path.join(model_dir, CONFIG_CHANGES_FILE), "a") as f:
                f.write(json.dumps({"step": resume_step, "time": time.time(),
                                    "changes": changes}) + "\n")
    if jax.process_index() == 0:
        write_text_atomic(path, config_text)


def train(*, allow_config_change: bool = False, **overrides) -> Dict[str, Any]:
    """Entry point: builds the trainer from the gin bindings of `build_trainer` (explicit
    `overrides` win), runs it, writes `config.gin` and `train_summary.json` to MODEL_DIR
    (atomically; a resume with another config refuses unless `allow_config_change`)."""
    import gin

    from .training.checkpointing import write_json_atomic

    trainer = gin_utils.configured(build_trainer)(**overrides)
    model_dir = trainer.config.model_dir
    os.makedirs(model_dir, exist_ok=True)
    record_config(model_dir, gin.config_str(), trainer.checkpointer.latest_step(),
                  allow_config_change)
    summary = trainer.run()
    if jax.process_index() == 0:
        write_json_atomic(os.path.join(model_dir, "train_summary.json"),
                          json.loads(json.dumps(summary, default=str)))
    write_run_reports(trainer, summary)
    return summary


def configure_from_argv(argv: Sequence[str], extra_flags=None):
    """Parses t5x/train.py-style flags and gin; returns the absl FLAGS object."""
    from absl import flags

    FLAGS = flags.FLAGS
    if "gin_file" not in FLAGS:
        flags.DEFINE_multi_string("gin_file", [], "gin files (searched in --gin_search_paths "
                                  "and the package gin/ directory)")
        flags.DEFINE_multi_string("gin_bindings", [], "individual gin bindings")
        flags.DEFINE_list("gin_search_paths", [], "comma-separated gin search paths")
        flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory override")
    # --multiprocess, --coordinator_address, --process_count, --process_index (t5x names)
    distributed.define_flags(flags)
    if extra_flags:
        extra_flags(flags)
    FLAGS(gin_utils.rewrite_gin_args(list(argv)))
    distributed.initialize_from_flags(FLAGS)
    if FLAGS.tfds_data_dir:
        import seqio

        seqio.set_tfds_data_dir_override(FLAGS.tfds_data_dir)
    # Task modules may register gin configurables (e.g. SUPERGLUE_DIR): import ours first.
    importlib.import_module("xprompt_jax.tasks")
    # Not finalized: task modules named by MIXTURE_OR_TASK_MODULE are imported later.
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings,
                        gin_utils.split_search_paths(FLAGS.gin_search_paths), finalize=False)
    return FLAGS


def maybe_initialize_distributed(mode: str) -> None:
    """Multi-host: `jax.distributed.initialize()` before any other jax call
    (`training/distributed.py`; the CLIs pass the t5x-style flags there)."""
    distributed.initialize(mode)


def main(argv: Sequence[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_train_flags)
    from xprompt_jax import train as train_lib  # the registered functions, also under __main__

    gin_utils.call_configured(
        lambda: train_lib.train(force=FLAGS.force, allow_config_change=FLAGS.allow_config_change),
        "xprompt_jax.train")


def _define_train_flags(flags) -> None:
    if "force" not in flags.FLAGS:
        flags.DEFINE_bool("force", False, "take over MODEL_DIR even if another live run "
                          "holds its lock")
        flags.DEFINE_bool("allow_config_change", False, "resume with a config that differs "
                          "from MODEL_DIR/config.gin (both are recorded)")


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.train")


if __name__ == "__main__":
    console_entry()
