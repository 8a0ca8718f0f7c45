"""The pipeline's stage records: each stage writes its artifacts under MODEL_DIR/<stage>/
and a `DONE.json` marker when it finishes; a rerun skips finished stages.

Multi-process runs: process 0 writes the files (`fileio.is_writer`); after each mark all
processes meet at a barrier, so that none reads a stage's result before it exists (a
shared MODEL_DIR, as T5X assumes on a pod).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from typing import Any, Dict, Mapping, Optional

from ..fileio import barrier, is_writer, read_json, write_json_atomic

DONE_FILE = "DONE.json"


def done_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, stage, DONE_FILE)


def stage_done(model_dir: str, stage: str) -> Optional[Dict[str, Any]]:
    """The stage's marker (None while it has not finished)."""
    path = done_path(model_dir, stage)
    return read_json(path, f"XPrompt {stage} stage marker") if os.path.exists(path) else None


def write_result(path: str, data: Any) -> None:
    """A stage's JSON result (process 0)."""
    if is_writer():
        write_json_atomic(path, data)


def mark_done(model_dir: str, stage: str, info: Mapping[str, Any]) -> None:
    """Marks a stage done, then every process waits for the mark."""
    write_result(done_path(model_dir, stage), dict(info))
    barrier(f"xprompt_jax.pipeline:{model_dir}/{stage}")


class StageClock:
    """Wall seconds of each stage in this invocation (`report['timings_s']`; a stage
    resumed from its files shows the time to load them), `total` their sum."""

    def __init__(self):
        self._last = time.time()
        self.seconds: Dict[str, float] = {"total": 0.0}

    def mark(self, stage: str) -> None:
        now = time.time()
        self.seconds[stage] = round(now - self._last, 1)
        self.seconds["total"] = round(self.seconds["total"] + now - self._last, 1)
        self._last = now


# ------------------------------------------------------------------ what each stage used
# A stage's result is reused only while its inputs are unchanged. Its inputs are the run's
# settings (the gin config text, less the macros that only move files or set cadences) and
# the XPromptConfig fields it reads, chained: a stage redone makes every later stage redone.
# A redone stage's earlier folder is kept, renamed `<stage>.superseded_<n>`.
INPUTS_FILE = "INPUTS.json"
# Macros that change where files are or how often we log/save, never a result.
NOT_RESULT_MACROS = ("MODEL_DIR", "WORLD_DIR", "SUPERGLUE_DIR", "GLUE_DIR", "MRQA_DIR",
                     "LOG_PERIOD", "KEEP_CHECKPOINTS", "SAVE_PERIOD", "ON_NONFINITE")
# XPromptConfig fields read by each stage (stage1 reads the run plus these).
STAGE_FIELDS = {
    "stage1": ("stage1_init_path", "stage1_steps"),
    "scores": ("num_score_examples", "per_example"),
    "curve": ("masking_curve", "curve_ratios", "curve_random_seeds"),
    "search": ("token_ratios", "piece_ratios", "piece_ranking", "prune_levels",
               "mask_variant", "mask_seed", "search_include_unpruned",
               "rewind_each_candidate", "rewind_steps", "rewind_jointly"),
    "rewind": ("rewind_steps",),
    "ablation": ("rewind_steps", "mask_seed"),
}
# Fields that change no stage's result (how the work is batched, which extra variants run).
NO_RESULT_FIELDS = ("batched_search", "ablations")
# The folders of each stage (the first holds INPUTS.json).
STAGE_DIRS = {"stage1": ("stage1",), "scores": ("scores",), "curve": ("curve",),
              "search": ("search", "rewind_candidates"), "rewind": ("rewind", "final_eval")}
# What each stage depends on, in pipeline order (ablations follow the search).
UPSTREAM = {"scores": "stage1", "curve": "scores", "search": "scores", "rewind": "search"}


def _statements(text: str) -> list:
    """gin config text as statements (a line at column 0 and its indented continuation
    lines); comments and blank lines dropped."""
    out: list = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if out and (line[0].isspace() or line[0] in ")]}"):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def stage1_config_text(config_text: str) -> str:
    """The run's part of a pipeline's gin text: without XPromptConfig's bindings and the
    macros only they read (those are checked stage by stage, `STAGE_FIELDS`)."""
    statements = _statements(config_text)
    xprompt = [s for s in statements
               if _name(s).split(".")[-2:-1] == ["XPromptConfig"]
               or _name(s) in ("XPROMPT", "pipeline.run_pipeline.config")]
    refs = {ref for s in xprompt for ref in _macro_refs(s.split("=", 1)[-1])}
    others = [s for s in statements if s not in xprompt]
    used_elsewhere = {ref for s in others if _name(s) not in refs
                      for ref in _macro_refs(s.split("=", 1)[-1])}
    only_xprompt = refs - used_elsewhere - {"XPROMPT"}
    kept = [s for s in others if _name(s) not in only_xprompt]
    return "\n".join(kept) + "\n"


def _macro_refs(value: str) -> set:
    return set(re.findall(r"%([A-Za-z_][\w./]*)", value))


def _name(statement: str) -> str:
    """What a gin statement binds (`MACRO` or `scope.fn.param`)."""
    return statement.split("=", 1)[0].strip()


def stage1_record(config_text: str, config: Any) -> str:
    """What stage 1 trains from, as MODEL_DIR/stage1/config.gin records it: the run's gin
    text and the XPromptConfig fields stage 1 reads."""
    return stage1_config_text(config_text) + "".join(
        f"XPromptConfig.{f} = {getattr(config, f)!r}\n" for f in STAGE_FIELDS["stage1"])


def _run_lines(config_text: str) -> list:
    return [s for s in _statements(stage1_config_text(config_text))
            if _name(s) not in NOT_RESULT_MACROS]


def stage_inputs(config_text: str, config: Any, stages) -> Dict[str, Dict[str, Any]]:
    """`{stage: {'after': upstream key, 'run': key of the run's settings, <field>: value}}`
    for `stages` (names of STAGE_FIELDS, or 'ablations/<variant>')."""
    fields = {f.name for f in dataclasses.fields(config)}
    known = {n for names in STAGE_FIELDS.values() for n in names} | set(NO_RESULT_FIELDS)
    if fields - known:  # a new field must say which stage reads it
        raise AssertionError(f"XPromptConfig fields without a stage: {sorted(fields - known)}")
    run_key = hashlib.sha256("\n".join(_run_lines(config_text)).encode()).hexdigest()[:16]
    out: Dict[str, Dict[str, Any]] = {}
    for stage in stages:
        kind = "ablation" if stage.startswith("ablations/") else stage
        upstream = "search" if kind == "ablation" else UPSTREAM.get(stage)
        names = STAGE_FIELDS[kind]
        if kind == "search" and not config.rewind_each_candidate:  # no candidate retrains
            names = [n for n in names if n not in ("rewind_steps", "rewind_jointly")]
        inputs = {"run": run_key,
                  "after": key(out[upstream]) if upstream else None,
                  **{f: _plain(getattr(config, f)) for f in names}}
        out[stage] = inputs
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def key(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def stage_dirs(stage: str) -> tuple:
    return STAGE_DIRS.get(stage, (stage,))


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list:
    """Names of what differs: XPromptConfig fields, 'the run's settings', 'an earlier
    stage'."""
    out = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            out.append({"run": "the run's settings", "after": "an earlier stage"}.get(
                name, name))
    return out


def supersede_changed(model_dir: str, inputs: Mapping[str, Mapping[str, Any]]) -> list:
    """Renames aside the folders of every stage whose recorded inputs differ from `inputs`
    (and of every stage after it, finished or not); returns `[(stage, changes, kept)]`.
    Folders without a record (a run made before stages recorded their inputs) are
    reused."""
    moved = []
    stale = False
    for stage, current in inputs.items():
        if stage == "stage1":  # never redone: its config is checked like training's
            continue
        dirs = [os.path.join(model_dir, d) for d in stage_dirs(stage)]
        path = os.path.join(dirs[0], INPUTS_FILE)
        recorded = read_json(path, f"XPrompt {stage} inputs record") \
            if os.path.exists(path) else None
        if stale:
            changes = ["an earlier stage"]
        elif recorded is not None and recorded != current:
            changes = changed_settings(recorded, current)
        else:
            changes = []
        if changes:
            stale = True
            existing = [d for d in dirs if os.path.exists(d)]
            if existing:
                kept = [_rename_aside(d) for d in existing] if is_writer() else []
                moved.append((stage, changes, kept))
    barrier(f"xprompt_jax.pipeline:{model_dir}/inputs")
    return moved


def _rename_aside(path: str) -> str:
    n = 1
    while os.path.exists(f"{path}.superseded_{n}"):
        n += 1
    os.rename(path, f"{path}.superseded_{n}")
    return f"{path}.superseded_{n}"


def record_inputs(model_dir: str, stage: str, inputs: Mapping[str, Any]) -> None:
    """Records what a stage is computed from, before it starts (process 0)."""
    path = os.path.join(model_dir, stage_dirs(stage)[0], INPUTS_FILE)
    if is_writer() and (not os.path.exists(path) or
                        read_json(path, f"XPrompt {stage} inputs record") != dict(inputs)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, dict(inputs))
