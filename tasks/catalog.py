"""The default set of registered names and its markdown listing (``tasks/TASKS.md``).

``python -m xprompt_jax.tasks`` prints the markdown (``--write PATH`` writes it).
``tests/test_tasks_registry.py`` checks that ``tasks/TASKS.md`` matches.
"""

from __future__ import annotations

import argparse
import sys
from typing import List

from . import fewshot
from . import glue
from . import ept_heldout
from . import heldout
from . import mixtures
from . import mrqa
from . import superglue


def superglue_task_names() -> List[str]:
    return [superglue.task_name(f, t, s) for f in superglue.FAMILIES
            for t in superglue.TASKS for s in superglue.SOURCES] + [
        superglue.alias_name(f, t) for f in superglue.FAMILIES for t in superglue.TASKS
    ] + list(superglue.extra_task_names())


def glue_task_names() -> List[str]:
    names = [glue.task_name(t, s) for t in glue.TASKS for s in glue.SOURCES]
    names += [glue.task_name("mnli_mismatched", s) for s in glue.SOURCES]
    return names


def ept_task_names() -> List[str]:
    return [glue.ept_task_name(t, v) for t, _, _, _, v in glue.EPT_EXTRA]


def qa_task_names() -> List[str]:
    return mrqa.task_names()


def heldout_task_names() -> List[str]:
    return ept_heldout.ept_heldout_task_names()


def fewshot_bases() -> List[str]:
    """Tasks that get default k-shot variants (k in 4, 16, 32; seed 0; random)."""
    bases = [superglue.task_name(f, t, s) for f in superglue.FAMILIES
             for t in superglue.CLASSIFICATION_TASKS for s in superglue.SOURCES]
    bases.append(glue.ept_task_name("scitail", "v100"))
    return bases


def fewshot_task_names(seed: int = 0) -> List[str]:
    return [fewshot.fewshot_name(b, k, seed) for b in fewshot_bases()
            for k in fewshot.DEFAULT_SHOTS]


def mixture_names() -> List[str]:
    names = []
    for family in superglue.FAMILIES:
        for source in superglue.SOURCES:
            names.append(mixtures.superglue_mixture_name(family, source))
            names += [mixtures.superglue_mixture_name(family, source, k)
                      for k in fewshot.DEFAULT_SHOTS]
    names += [mixtures.glue_mixture_name(s) for s in glue.SOURCES]
    return names


def default_task_names() -> List[str]:
    """Every task registered by ``import xprompt_jax.tasks`` (without extra seeds)."""
    return sorted(superglue_task_names() + glue_task_names() + ept_task_names()
                  + qa_task_names() + heldout_task_names() + fewshot_task_names())


def _bullets(names: List[str]) -> str:
    return "\n".join(f"- `{n}`" for n in sorted(names))


def markdown() -> str:
    """The generated task list (tasks/TASKS.md): every default task and mixture name."""
    sg, gl, ept = superglue_task_names(), glue_task_names(), ept_task_names()
    fs, mx = fewshot_task_names(), mixture_names()
    qa, ho = qa_task_names(), heldout_task_names()
    total = len(sg) + len(gl) + len(ept) + len(qa) + len(ho) + len(fs)
    lines: List[str] = [
        "## Registered tasks and mixtures",
        "",
        "`import xprompt_jax.tasks` (or `--gin.MIXTURE_OR_TASK_MODULE="
        "xprompt_jax.tasks`) registers "
        f"**{total} tasks** and **{len(mx)} mixtures** with seqio "
        "(`xprompt_jax.tasks.registered_task_names()` lists them).",
        "",
        "Naming: `{family}_{benchmark}_{task}_{source}[_{k}shot]`.",
        "",
        "- family `xprompt`: XPrompt's templates (Table 10), `{mask}` = "
        "`<extra_id_0>`, targets `<extra_id_0> <label>`; `xprompt_nosentinel`: the same "
        "without the sentinel; `lester`: T5's formats and labels without the task "
        "name (Lester et al.).",
        "- source `v102` / `v200` / `v100` ...: TFDS version (`super_glue/*:1.0.2`, "
        "`glue/*:2.0.0`, ...); `local`: the official files in the directory given by "
        "the gin macro `SUPERGLUE_DIR` / `GLUE_DIR` or the environment variable "
        "`XPROMPT_SUPERGLUE_DIR` / `XPROMPT_GLUE_DIR` (`<dir>/RTE/{train,val,test}"
        ".jsonl`, `<dir>/RTE/{train,dev,test}.tsv`).",
        "- SuperGLUE tasks also have an unversioned name, `{family}_super_glue_{task}` "
        "(e.g. `xprompt_super_glue_rte`): the same task as its `v102` (TFDS) variant.",
        "- `_{k}shot`: k training examples (MultiRC: k questions) drawn with seed 0; "
        "full validation set. Other seeds / class-balanced subsets: "
        "`xprompt_jax.tasks.fewshot_task(base, k, seed=..., sampling=...)`, or list "
        "seeds in `XPROMPT_FEWSHOT_SEEDS=1,2,3` before import (names end in "
        "`_seed<s>`).",
        "- The vocabulary is `gs://t5-data/vocabs/cc_all.32000/sentencepiece.model` "
        "unless `XPROMPT_T5_VOCAB` (or gin `xprompt_jax.tasks.t5_vocab_path.path`) "
        "names another copy.",
        "- Evaluation: generation + `postprocess_fn`, or rank classification over "
        "`get_label_strings(task)` (class-id order, rendered exactly like the "
        "targets) or, where that is `None` (XPrompt WSC, ReCoRD), over each "
        "example's `label_strings` feature; feed the best string through the "
        "task's `postprocess_fn` like a generated prediction. T5-style WSC "
        "(`lester_super_glue_wsc_{v102,local}`, `wsc_simple`) is generation only.",
        "- Label parsing is T5's: a generated label counts only when it is exactly a "
        "label string (`xprompt` family: after a leading `<extra_id_0>` is dropped and "
        "the rest stripped, as seqio's sentinel tasks); anything else scores as wrong. "
        "The evaluator's `LABEL_PARSING = 'lenient'` (ours) also forgives any leading "
        "`<extra_id_N>` and surrounding whitespace.",
        "- Main metric (`get_main_metric`): accuracy; CoLA Matthews corr.; CB "
        "mean(accuracy, macro-F1); MultiRC mean(F1a, EM; EM over questions grouped by "
        "the question index, as T5); ReCoRD mean(EM, F1); "
        "MRPC/QQP mean(F1, accuracy); STS-B mean(Pearson, Spearman). Key names where "
        "T5's differ (CB `mean_3class_f1`, MultiRC `f1`, ReCoRD / SQuAD `em`): "
        "`xprompt_jax.tasks.t5_metrics(task, metrics)`.",
        "",
        f"### SuperGLUE ({len(sg)})",
        "",
        "| task | `xprompt` | `xprompt_nosentinel` | `lester` |",
        "|---|---|---|---|",
    ] + [
        f"| {t} | " + " | ".join(
            "<br>".join([f"`{superglue.alias_name(f, t)}`"] +
                        [f"`{superglue.task_name(f, t, src)}`"
                         for src in superglue.SOURCES])
            for f in superglue.FAMILIES) + " |"
        for t in superglue.TASKS
    ] + [
        "",
        "Also (`lester` family): "
        + ", ".join(f"`{n}`" for n in superglue.extra_task_names())
        + " (`wsc_true_false`: T5's `wsc`, candidate `* *` and pronoun `# #` marked, "
        "`False` / `True` targets, every training example, the EPT held-out WSC; "
        "`axb`, `axg`: SuperGLUE's diagnostics as T5 registers them, `test` split only, "
        "RTE's format and labels, for a prompt trained on RTE; main metric Matthews "
        "correlation (AX-b) / accuracy (AX-g); local files `<dir>/AX-b/AX-b.jsonl`, "
        "`<dir>/AX-g/AX-g.jsonl`).",
    ] + [
        "",
        f"### GLUE ({len(gl)})",
        "",
        "| task | TFDS `glue/<task>:2.0.0` | TFDS `glue/<task>:1.0.0` (T5 0.9, Lester et "
        "al.) | local TSV |",
        "|---|---|---|---|",
    ] + [
        f"| {t} | `{glue.task_name(t, 'v200')}` | `{glue.task_name(t, 'v100')}` | "
        f"`{glue.task_name(t, 'local')}` |"
        for t in list(glue.TASKS) + ["mnli_mismatched"]
    ] + [
        "",
        f"### EPT extra tasks, TFDS only ({len(ept)})",
        "",
        "| task | TFDS dataset |",
        "|---|---|",
    ] + [
        f"| `{glue.ept_task_name(t, v)}` | `{tfds_name}` |"
        for t, tfds_name, _, _, v in glue.EPT_EXTRA
    ] + [
        "",
        f"### Extractive QA: MRQA and SQuAD ({len(qa)})",
        "",
        "`question: {q} context: {c}` -> the first answer; generation, SQuAD EM / F1 "
        "(official normalisation), main metric F1. Local files in the official MRQA "
        "layout `<dir>/train/<Name>.jsonl.gz`, `<dir>/dev/<Name>.jsonl.gz` (or `.jsonl`) "
        "under the gin macro `MRQA_DIR` or `XPROMPT_MRQA_DIR`; out-of-domain sets "
        "(dev only) have `validation` / `test` only.",
        "",
        "| MRQA file | task | splits |",
        "|---|---|---|",
    ] + [
        f"| `{d}` | `{mrqa.task_name(d)}` | "
        + ("train, validation, test" if d in mrqa.IN_DOMAIN else "validation, test")
        + " |" for d in mrqa.IN_DOMAIN + mrqa.OUT_OF_DOMAIN
    ] + [
        f"| TFDS `{mrqa.SQUAD_TFDS}` | `{mrqa.squad_task_name()}` | "
        "train, validation, test (= validation) |",
        "",
        f"### EPT held-out splits ({len(ho)})",
        "",
        "`<base>_heldout`: EPT App. B.1's re-split (seed 0) with the paper's metric as "
        "the main metric; select on `validation`, report `test` "
        "(`EVAL_HELDOUT_SPLIT='test'`). Any other task: "
        "`xprompt_jax.tasks.heldout_task(base, strategy='auto')`.",
        "",
        "| EPT dataset | re-split | tasks |",
        "|---|---|---|",
    ] + [
        f"| {d.name} | "
        + ("validation halved (val / test)" if d.spec.strategy == "split_validation"
           else f"{d.spec.num_validation:,} of train -> validation; "
                + (f"{d.spec.num_train:,} more -> train; " if d.spec.num_train else "")
                + f"{d.spec.test_split} -> test")
        + " | " + "<br>".join(f"`{heldout.heldout_name(b)}`" for b in d.bases) + " |"
        for d in ept_heldout.ept_datasets()
    ] + [
        f"| {d.name} (labelled local test) | train, validation, test as published; the "
        "test file must be labelled | "
        + "<br>".join(f"`{heldout.heldout_name(b)}{ept_heldout.LABELLED_TEST_SUFFIX}`"
                      for b in d.labelled_test_bases) + " |"
        for d in ept_heldout.ept_datasets() if d.labelled_test_bases
    ] + [
        "",
        "WSC's held-out base is T5's `wsc` True/False format (all 554 training examples, "
        "Table 5); MRPC's Table 5 test (1,725) is GLUE's labelled test set: put the MSR "
        "corpus's `msr_paraphrase_test.txt` (same columns as `train.tsv`) at "
        "`<GLUE_DIR>/MRPC/test.tsv` and use the labelled-test variant; `<base>_heldout` "
        "halves validation instead (204 / 204).",
    ] + [
        "",
        f"### Few-shot ({len(fs)})",
        "",
        "<details><summary>all few-shot task names</summary>",
        "",
        "\n".join(f"- `{n}`" for n in fs),
        "",
        "</details>",
        "",
        f"### Mixtures ({len(mx)})",
        "",
        "SuperGLUE mixtures hold BoolQ, CB, COPA, MultiRC, RTE, WiC and WSC of one "
        "family and source (or their k-shot variants); GLUE mixtures hold the eight "
        "GLUE tasks. Rates: number of training examples "
        "(`seqio.mixing_rate_num_examples`).",
        "",
        _bullets(mx),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xprompt_jax.tasks",
        description="Print (or write) the markdown list of registered tasks.")
    parser.add_argument("--write", metavar="PATH", help="write the markdown here")
    args = parser.parse_args(argv)
    text = markdown()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0

