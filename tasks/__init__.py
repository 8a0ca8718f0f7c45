"""seqio tasks and mixtures of xprompt_jax (installed as ``xprompt_jax.tasks``).

Importing this package registers every task and mixture (SuperGLUE in the XPrompt and
Lester/T5 template families, GLUE, EPT's extra TFDS tasks, k-shot variants, mixtures)
without touching the network: data directories and the vocabulary are resolved when
data is first read. Use it as a T5X task module:
``--gin.MIXTURE_OR_TASK_MODULE=xprompt_jax.tasks``. ``tasks/TASKS.md`` lists the names.

Evaluation helpers:

* ``get_label_strings(task)`` - target strings per class id for rank classification
  (``None`` where they depend on the example: read each example's ``label_strings``
  feature, or call ``get_example_label_strings(task, example)``; the T5-style WSC
  task is generation only). After scoring, pass the best label string through
  ``task.postprocess_fn(text, example=ex, is_target=False)`` as if it had been
  generated: metrics then work unchanged.
* ``get_main_metric(task)`` / ``get_metric_components(task)`` - the model-selection
  metric key (``'average'`` = mean of the components where there are several);
  ``main_metric_value(task, metrics)`` reads it from a metric dict;
  ``t5_metrics(task, metrics)`` renames it to T5's keys (``mean_3class_f1``, MultiRC
  ``f1``, ``em``) where ours differ.
* ``fewshot_task(base, k, seed, sampling)`` - register any other k-shot subset.
* ``heldout_task(base, strategy)`` - register a held-out test split (EPT App. B.1).
"""

from . import catalog
from . import ept_heldout
from . import fewshot
from . import glue
from . import heldout
from . import metrics
from . import mixtures
from . import mrqa
from . import paper_settings
from . import postprocessors
from . import preprocessors
from . import readers
from . import registry
from . import sources
from . import superglue
from . import templates
from . import vocab
from .fewshot import fewshot_name, fewshot_task, select_examples
from .heldout import heldout_name, heldout_task
from .registry import (get_example_label_strings, get_label_strings,
                       get_main_metric, get_metric_components,
                       has_per_example_label_strings, main_metric_value,
                       registered_mixture_names, registered_task_names, t5_metric_names,
                       t5_metrics, task_info)
from .sources import resolve_data_dir
from .vocab import get_vocabulary, output_features, t5_vocab_path


def _register_everything() -> None:
    superglue.register_all()
    glue.register_all()
    mrqa.register_all()
    ept_heldout.register_ept_heldout()
    seeds = [0] + fewshot.extra_seeds_from_env()
    for base in catalog.fewshot_bases():
        for k in fewshot.DEFAULT_SHOTS:
            for seed in seeds:
                fewshot_task(base, k, seed)
    mixtures.register_all()


_register_everything()

__all__ = [
    "fewshot_name", "fewshot_task", "get_example_label_strings", "heldout_name",
    "heldout_task",
    "get_label_strings", "get_main_metric", "main_metric_value",
    "get_metric_components", "get_vocabulary", "has_per_example_label_strings",
    "output_features", "registered_mixture_names", "registered_task_names",
    "resolve_data_dir", "select_examples", "t5_metric_names", "t5_metrics",
    "t5_vocab_path", "task_info",
]
