"""World tasks for the quality benchmark: a labelled held-out test split and k-shot train.

The world's `test.jsonl` files carry no labels (like SuperGLUE's), so selecting and
reporting on one split would be the only option. Importing this module registers, for
each world task T (boolq, rte, copa, wic):

* `world_T_heldout` (and `world_T_prefixed_heldout`, the task-name reference): EPT
  App. B.1's `from_train` re-split - `validation` (dev, used for checkpoint and mask
  selection) = `DEV_SIZE` 200 training examples drawn with seed 0, `train` = the other
  1800, `test` = the world's labelled 400-example validation file (the split of the
  reference table of docs/benchmarks.md). The same seed gives both formats the same re-split.
* `world_T_heldout_<k>shot[_seed<s>]` for k in `SHOTS` and s in `SEEDS`: the k-shot
  train subset (`xprompt_jax.tasks.fewshot_task`, random sampling with seed s) of the
  1800 remaining training examples; dev and test unchanged.

`bench/quality.py` includes `gin/world/bench.gin`, which imports this module and sets
`EVAL_HELDOUT_SPLIT = 'test'`.
"""

from __future__ import annotations

from typing import List

from xprompt_jax.tasks import fewshot, heldout

from . import seqio_tasks

DEV_SIZE = 200
SHOTS = (16, 32, 64)
SEEDS = tuple(range(10))


def heldout_task_name(task: str, prefixed: bool = False) -> str:
    """`world_rte_heldout` / `world_rte_prefixed_heldout`."""
    return heldout.heldout_name(seqio_tasks.task_name(task, prefixed))


def bench_task_name(task: str, k: int = 0, seed: int = 0) -> str:
    """The benchmark task of a regime: full train (`k` 0) or k-shot with `seed`."""
    base = heldout_task_name(task)
    return base if not k else fewshot.fewshot_name(base, k, seed)


def register_all() -> List[str]:
    names = []
    for task in seqio_tasks.TASK_NAMES:
        for prefixed in (False, True):
            names.append(heldout.heldout_task(
                seqio_tasks.task_name(task, prefixed), strategy="from_train",
                num_validation=DEV_SIZE, test_split="validation", seed=0,
                name=heldout_task_name(task, prefixed)))
        for k in SHOTS:
            for seed in SEEDS:
                names.append(fewshot.fewshot_task(heldout_task_name(task), k, seed))
    return names


REGISTERED = register_all()
