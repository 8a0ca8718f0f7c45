"""Text preprocessors: raw (TFDS-shaped) examples -> ``inputs`` / ``targets`` strings.

Every preprocessor keeps what evaluation needs next to the two strings:

* ``label`` - the class id (-1 for unlabeled test examples; float score for STS-B);
* ``idx`` (or ``idx/paragraph``, ``idx/question``, ``idx/answer`` for MultiRC,
  ``idx/passage``, ``idx/query`` for ReCoRD, flattened as T5 does);
* ``label_strings`` - the candidate target strings of this example in class-id order,
  rendered exactly as ``targets`` would be (with the ``<extra_id_0> `` prefix in the
  sentinel family). Rank classification scores these, then feeds the best one through
  the task's ``postprocess_fn`` like a generated prediction. For WSC (XPrompt
  family) they are ``['<extra_id_0> another word', '<extra_id_0> <span1_text>']``;
  for ReCoRD they are the passage's entities;
* task fields a postprocessor needs (WSC ``span1_text``; ReCoRD ``answers``).

All functions return ``dataset -> dataset`` callables for ``seqio.Task``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import tensorflow as tf

from . import templates as tmpl
from .templates import Template

AUTOTUNE = tf.data.AUTOTUNE
DatasetFn = Callable[[tf.data.Dataset], tf.data.Dataset]


def _copy_ids(ex: Mapping[str, Any], out: Dict[str, Any]) -> None:
    """Copies ``idx`` (flattening a nested dict to ``idx/<key>`` like T5)."""
    if "idx" not in ex:
        return
    idx = ex["idx"]
    if isinstance(idx, Mapping):
        for k, v in idx.items():
            out[f"idx/{k}"] = v
    else:
        out["idx"] = idx


def _string_fields(ex: Mapping[str, Any]) -> Dict[str, tf.Tensor]:
    return {k: v for k, v in ex.items()
            if isinstance(v, tf.Tensor) and v.dtype == tf.string
            and v.shape.rank == 0}


def classification(template: Template, sentinel: bool = False,
                   html_cleanup: bool = False) -> DatasetFn:
    """Fixed-label classification: ``template`` inputs, ``labels[label]`` targets."""
    if template.labels is None:
        raise ValueError(f"classification() needs fixed labels: {template}")
    fmt = template.inputs_format(sentinel)
    prefix = tmpl.target_prefix(sentinel)
    label_strings = [prefix + l for l in template.labels]

    def fn(ex):
        inputs = tmpl.render(fmt, _string_fields(ex), mask=tmpl.SENTINEL)
        if html_cleanup:
            inputs = tmpl.strip_multirc_html(inputs)
        out = {
            "inputs": inputs,
            "targets": tmpl.label_target(ex["label"], template.labels, prefix),
            "label": ex["label"],
            "label_strings": tf.constant(label_strings),
        }
        _copy_ids(ex, out)
        return out

    return lambda ds: ds.map(fn, num_parallel_calls=AUTOTUNE)


def stsb(template: Template) -> DatasetFn:
    """STS-B as T5: rounded-score string targets ("0.0" ... "5.0")."""
    fmt = template.inputs_format(False)

    def fn(ex):
        out = {
            "inputs": tmpl.render(fmt, _string_fields(ex)),
            "targets": tmpl.stsb_target(ex["label"]),
            "label": ex["label"],
            "label_strings": tf.constant(list(tmpl.STSB_LABELS)),
        }
        _copy_ids(ex, out)
        return out

    return lambda ds: ds.map(fn, num_parallel_calls=AUTOTUNE)


def wsc_xprompt(template: Template, sentinel: bool = True) -> DatasetFn:
    """XPrompt WSC: target ``span1_text`` if the label is True else ``another word``."""
    fmt = template.inputs_format(sentinel)
    prefix = tmpl.target_prefix(sentinel)

    def fn(ex):
        span1 = ex["span1_text"]
        label_strings = tf.stack([tf.constant(prefix + tmpl.XPROMPT_WSC_OTHER),
                                  tf.strings.join([prefix, span1])])
        label = tf.cast(ex["label"], tf.int32)
        targets = tf.where(label < 0, tf.constant(prefix + tmpl.UNK_TARGET),
                           tf.gather(label_strings, tf.maximum(label, 0)))
        out = {
            "inputs": tmpl.render(fmt, _string_fields(ex), mask=tmpl.SENTINEL),
            "targets": targets,
            "label": ex["label"],
            "label_strings": label_strings,
            "span1_text": span1,
            "span2_text": ex["span2_text"],
        }
        _copy_ids(ex, out)
        return out

    return lambda ds: ds.map(fn, num_parallel_calls=AUTOTUNE)


def wsc_true_false(template: Template) -> DatasetFn:
    """T5's ``wsc`` (taskless): both spans marked (``templates.tf_wsc_marked_spans``),
    targets ``False`` / ``True`` from the label, so label-False examples train too."""
    fmt = template.inputs_format(False)

    def fn(ex):
        fields = dict(_string_fields(ex))
        fields["wsc_marked"] = tmpl.tf_wsc_marked_spans(
            ex["text"], ex["span1_text"], ex["span1_index"], ex["span2_text"],
            ex["span2_index"])
        out = {
            "inputs": tmpl.render(fmt, fields),
            "targets": tmpl.label_target(ex["label"], template.labels),
            "label": ex["label"],
            "label_strings": tf.constant(list(template.labels)),
        }
        _copy_ids(ex, out)
        return out

    return lambda ds: ds.map(fn, num_parallel_calls=AUTOTUNE)


def wsc_simple(template: Template) -> DatasetFn:
    """T5's ``wsc_simple`` (taskless): marked pronoun in, candidate referent out.

    Targets are always ``span1_text`` (the candidate referent), so the task's train
    split must keep only label-True examples (``sources.TrainFilteredSource``), as T5's
    ``super_glue_wsc_v102_simple_train``; evaluation (T5's ``wsc_simple``
    postprocessor) checks whether the generated referent matches the candidate and
    compares that with the label. There are no fixed label strings.
    """
    fmt = template.inputs_format(False)

    def fn(ex):
        fields = dict(_string_fields(ex))
        fields["wsc_text"] = tmpl.tf_wsc_simple_text(
            ex["text"], ex["span2_index"], ex["span2_text"])
        out = {
            "inputs": tmpl.render(fmt, fields),
            "targets": ex["span1_text"],
            "label": ex["label"],
            "span1_text": ex["span1_text"],
            "span2_text": ex["span2_text"],
        }
        _copy_ids(ex, out)
        return out

    return lambda ds: ds.map(fn, num_parallel_calls=AUTOTUNE)


def record(template: Template, sentinel: bool = False) -> DatasetFn:
    """ReCoRD as T5: one example per answer (or one ``<unk>`` example without answers).

    Inputs render ``query``, ``entities`` (joined with ", ") and the passage with
    ``@highlight`` markers cleaned; ``answers`` is passed through for evaluation and
    ``label_strings`` are the entities (candidates for rank classification).
    """
    fmt = template.inputs_format(sentinel)
    prefix = tmpl.target_prefix(sentinel)

    def fn(ex):
        fields = {
            "query": ex["query"],
            "entities": tf.strings.reduce_join(ex["entities"], separator=", "),
            "passage": tmpl.record_passage(ex["passage"]),
        }
        inputs = tmpl.render(fmt, fields, mask=tmpl.SENTINEL)
        answers = ex["answers"]
        targets = tf.cond(tf.size(answers) > 0, lambda: answers,
                          lambda: tf.constant([tmpl.UNK_TARGET]))
        targets = tf.strings.join([prefix, targets]) if prefix else targets
        n = tf.size(targets)
        per_example = {
            "inputs": tf.fill([n], inputs),
            "targets": targets,
            "idx/passage": tf.fill([n], ex["idx"]["passage"]),
            "idx/query": tf.fill([n], ex["idx"]["query"]),
        }
        # Broadcast the variable-length lists along the new leading dimension.
        entities = (tf.strings.join([prefix, ex["entities"]]) if prefix
                    else ex["entities"])
        per_example["answers"] = tf.broadcast_to(
            answers, tf.concat([[n], tf.shape(answers)], axis=0))
        per_example["label_strings"] = tf.broadcast_to(
            entities, tf.concat([[n], tf.shape(entities)], axis=0))
        return tf.data.Dataset.from_tensor_slices(per_example)

    return lambda ds: ds.flat_map(fn)


def keep_label(value: int) -> Callable[[Mapping[str, tf.Tensor]], tf.Tensor]:
    """Predicate ``ex['label'] == value`` (for ``sources.TrainFilteredSource``)."""
    def predicate(ex):
        return tf.equal(ex["label"], tf.cast(value, ex["label"].dtype))
    return predicate
