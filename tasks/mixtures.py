"""Mixtures (rates proportional to the train split size, ``seqio.mixing_rate_num_examples``).

* ``{family}_super_glue_{source}_proportional`` - the seven SuperGLUE tasks
  (BoolQ, CB, COPA, MultiRC, RTE, WiC, WSC) of one family and source;
* ``{family}_super_glue_{source}_{k}shot_proportional`` - their k-shot variants;
* ``lester_glue_{source}_proportional`` - the eight GLUE tasks (MNLI evaluates on
  the matched dev set; ``lester_glue_mnli_mismatched_{source}`` is separate).

Rates are computed when a mixture is first read (they need the data's size).
"""

from __future__ import annotations

from typing import List

from . import fewshot
from . import glue
from . import registry
from . import superglue


def superglue_mixture_name(family: str, source: str, k: int = 0) -> str:
    shots = f"_{k}shot" if k else ""
    return f"{family}_super_glue_{source}{shots}_proportional"


def glue_mixture_name(source: str) -> str:
    return f"{glue.FAMILY}_glue_{source}_proportional"


def register_all() -> List[str]:
    names = []
    for family in superglue.FAMILIES:
        for source in superglue.SOURCES:
            tasks = [superglue.task_name(family, t, source)
                     for t in superglue.CLASSIFICATION_TASKS]
            name = superglue_mixture_name(family, source)
            registry.register_mixture(name, tasks)
            names.append(name)
            for k in fewshot.DEFAULT_SHOTS:
                name = superglue_mixture_name(family, source, k)
                registry.register_mixture(name, [fewshot.fewshot_name(t, k)
                                                 for t in tasks])
                names.append(name)
    for source in glue.SOURCES:
        name = glue_mixture_name(source)
        registry.register_mixture(name, [glue.task_name(t, source)
                                         for t in glue.TASKS])
        names.append(name)
    return names
