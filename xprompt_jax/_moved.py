"""Import paths of earlier versions, kept working or failing with the new home's name.

Modules that moved whole (or were split into one package) stay importable under their old
name: importing one gives a stand-in module that forwards every attribute to the new home,
with a `DeprecationWarning` naming it. Names that left a module that still exists (the
CLIs keep only their flags and `main`) fail naming where they went, or, where the object
itself is unchanged, are forwarded there with the same warning. `xprompt_jax/__init__.py`
installs the finder; such a module ends with `__getattr__ = _moved.module_getattr(__name__)`.

A moved name raises `ImportError` (not `AttributeError`): `from old import name` then shows
our message instead of Python's generic "cannot import name".
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Callable, Dict, Tuple

# old module -> (new module, note)
MOVED_MODULES: Dict[str, Tuple[str, str]] = {
    "xprompt_jax.training.evaluation": ("xprompt_jax.evaluation", ""),
    "xprompt_jax.training.bank_evaluation": (
        "xprompt_jax.evaluation", "a bank is scored by Evaluator(..., prompts="
        "PromptSelection(...)); majority_vote and table3_markdown are in "
        "xprompt_jax.evaluation.bank"),
    "xprompt_jax.training.heldout_eval": (
        "xprompt_jax.runs.report", "held-out reporting is EvalConfig.heldout_split of "
        "xprompt_jax.evaluation.Evaluator; run reports are xprompt_jax.runs.report"),
    "xprompt_jax.training.pretrained": ("xprompt_jax.checkpoints.pretrained", ""),
    "xprompt_jax.domain_shift": ("xprompt_jax.evaluation.domain_shift", ""),
    "xprompt_jax.xprompt.joint_rewind": ("xprompt_jax.xprompt.rewind", ""),
}

# module -> {name: (new home "module:name", same object?)}
MOVED_NAMES: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "xprompt_jax.train": {
        "build_trainer": ("xprompt_jax.runs.build:build_trainer (takes a RunConfig)", False),
        "train": ("xprompt_jax.runs.train:train (takes a RunConfig)", False),
        "configure_from_argv": ("xprompt_jax.runs.flags:configure_from_argv", True),
        "import_task_module": ("xprompt_jax.runs.flags:import_task_module", True),
        "frozen_shardings": ("xprompt_jax.runs.frozen:frozen_shardings", False),
        "record_config": ("xprompt_jax.runs.config_record:record_config", True),
        "config_differences": ("xprompt_jax.runs.config_record:config_differences", True),
        "RESUMABLE_CHANGES": ("xprompt_jax.runs.config_record:RESUMABLE_CHANGES", True),
        "write_run_reports": ("xprompt_jax.runs.train:write_run_report", False),
    },
    "xprompt_jax.evaluate": {
        "evaluate": ("xprompt_jax.runs.evaluate:evaluate (takes a RunConfig)", False)},
    "xprompt_jax.ensemble": {
        "evaluate_ensemble": ("xprompt_jax.runs.ensemble:evaluate_ensemble (takes a "
                              "RunConfig)", False),
        "bank_model_from_files": ("xprompt_jax.runs.prompt_files:bank_model_from_files", True),
    },
    "xprompt_jax.infer": {
        "infer": ("xprompt_jax.runs.infer:infer (takes a RunConfig)", False),
        "read_requests": ("xprompt_jax.runs.infer:read_requests", True),
        "parse_prompt_spec": ("xprompt_jax.runs.infer:parse_prompt_spec", True),
        "TaskInputs": ("xprompt_jax.runs.infer:TaskInputs", True),
    },
    "xprompt_jax.export": {
        "export_run": ("xprompt_jax.runs.export:export_run (takes a RunConfig)", False),
        "restore_trainable": ("xprompt_jax.runs.restore:restore_trainable (returns a "
                              "Restored tuple)", False),
        "projected_prompt": ("xprompt_jax.models.prompted:projected_prompt", True),
        "export_prompt": ("xprompt_jax.runs.export:export_prompt", True),
        "export_bank": ("xprompt_jax.runs.export:export_bank", True),
        "inference_model": ("xprompt_jax.runs.export:inference_model", True),
        "inference_variables": ("xprompt_jax.runs.export:inference_variables", True),
        "max_logit_difference": ("xprompt_jax.runs.export:max_logit_difference", True),
        "peft_prompt": ("xprompt_jax.runs.export:peft_prompt", True),
    },
    "xprompt_jax.prune": {
        "prune_t5x_checkpoint": ("xprompt_jax.xprompt.t5x_stage2:prune_t5x_checkpoint "
                                 "(takes a RunConfig and an XPromptConfig)", False),
        "checkpoint_param_shape": ("xprompt_jax.xprompt.t5x_stage2:checkpoint_param_shape",
                                   True),
    },
    "xprompt_jax.quickstart": {
        "run": ("xprompt_jax.world.quickstart:run", True),
        "gin_args": ("xprompt_jax.world.quickstart:gin_args", True),
    },
    "xprompt_jax.world.pretrain": {
        name: (f"xprompt_jax.world.pretraining:{name}", True)
        for name in ("PretrainConfig", "Mixture", "MODEL_KWARGS", "INPUT_LENGTH",
                     "TARGET_LENGTH", "model_config", "pretrain", "install",
                     "span_corruption", "checkpoint_size_bytes", "save_t5x_checkpoint",
                     "dev_rows", "evaluate")},
    "xprompt_jax.tasks.paper_settings": {
        "lester_prompt_init": ("xprompt_jax.prompts.task_init:lester_prompt_init", True)},
    "xprompt_jax.demo": {
        "config_from_params": ("xprompt_jax.models.config:config_from_params", True)},
    "xprompt_jax.training.trainer": {
        "init_variables": ("xprompt_jax.training.frozen_model:init_variables", True),
        "dummy_batch": ("xprompt_jax.training.frozen_model:dummy_batch", True),
        "check_pretrained_fits": ("xprompt_jax.training.frozen_model:check_pretrained_fits",
                                  True),
    },
    "xprompt_jax.training.bank_training": {
        "stack_prompt_files": ("xprompt_jax.runs.prompt_files:stack_prompt_files", True),
    },
    "xprompt_jax.training.checkpointing": {
        "write_json_atomic": ("xprompt_jax.fileio:write_json_atomic", True),
        "write_text_atomic": ("xprompt_jax.fileio:write_text_atomic", True),
        "to_jsonable": ("xprompt_jax.fileio:to_jsonable", True),
    },
    "xprompt_jax.training.distributed": {
        "is_writer": ("xprompt_jax.fileio:is_writer", True)},
}


def _resolve(home: str):
    module, _, name = home.split(" ", 1)[0].partition(":")
    return getattr(importlib.import_module(module), name)


def module_getattr(module_name: str) -> Callable[[str], object]:
    """A module `__getattr__` for the names that left `module_name`."""
    moved = MOVED_NAMES.get(module_name, {})

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        home, same = moved[name]
        if not same:
            raise ImportError(f"{module_name}.{name} moved to {home}")
        warnings.warn(f"{module_name}.{name} moved to {home}", DeprecationWarning,
                      stacklevel=2)
        return _resolve(home)

    return __getattr__


class _MovedModule(types.ModuleType):
    """Stand-in for a moved module: attributes come from the new home."""

    def __init__(self, old: str, new: str, note: str):
        super().__init__(old, f"Moved to {new}. {note}".strip())
        self.__dict__["_new"], self.__dict__["_note"] = new, note

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(self._new)
        if name in MOVED_NAMES.get(self.__name__, {}):
            return module_getattr(self.__name__)(name)
        if not hasattr(target, name):
            raise ImportError(f"{self.__name__}.{name}: the module moved to {self._new}, "
                              f"which has no {name!r}{'; ' + self._note if self._note else ''}")
        return getattr(target, name)


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new, note = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}" + (f" ({note})" if note else ""),
                      DeprecationWarning, stacklevel=2)
        return _MovedModule(spec.name, new, note)

    def exec_module(self, module):
        del module


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
