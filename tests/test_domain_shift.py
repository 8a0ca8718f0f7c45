"""Domain-shift evaluation (Lester et al. section 5): label-mapped QQP <-> MRPC transfer
(the evaluator's label-map option, its predictions scripted, metrics hand-computed) and the
per-task table."""

import pytest
import seqio
import tensorflow as tf

from _tasks_import import import_tasks
from training_utils import FEATURE_LENGTHS, tiny_prompted_model
from xprompt_jax.evaluation import EvalConfig, Evaluator, Predictions
from xprompt_jax.evaluation import domain_shift


GOLD = ["equivalent", "not_equivalent", "equivalent", "equivalent"]


def _mrpc_like(vocab_path: str) -> str:
    """An MRPC-like target task: classes (not_equivalent, equivalent), gold = GOLD."""
    name = "xprompt_test_mrpc_like"
    if name in seqio.TaskRegistry.names():
        return name
    vocab = seqio.SentencePieceVocabulary(vocab_path, extra_ids=100)
    features = {k: seqio.Feature(vocab, add_eos=True) for k in ("inputs", "targets")}

    def accuracy(targets, predictions):
        return {"accuracy": 100.0 * sum(t == p for t, p in zip(targets, predictions))
                / len(targets)}

    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(
                {"inputs": [f"pair {i}" for i in range(4)], "targets": GOLD}),
            splits=("validation",)),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features=features, metric_fns=[accuracy])
    return name


def _evaluator(vocab_path, mode, texts, label_map):
    """The real evaluator with a label map; its model's predictions replaced by `texts`
    (the options it would have scored are recorded)."""
    ev = Evaluator(tiny_prompted_model(), _mrpc_like(vocab_path), FEATURE_LENGTHS,
                   EvalConfig(mode=mode), label_map=label_map,
                   label_strings_fn=lambda ex: ["not_equivalent", "equivalent"])
    ev.seen_options = None

    def predict(variables, variants=None, *args, **kwargs):
        if mode == "rank_classification":
            ev.seen_options = ev.rank_options()[0][0]
        return Predictions([list(texts)])

    ev.predict = predict
    return ev


def test_default_label_maps_follow_the_task_kinds():
    import_tasks()
    assert domain_shift.label_map_for("lester_glue_qqp_v200", "lester_glue_mrpc_local") == {
        "not_duplicate": "not_equivalent", "duplicate": "equivalent"}
    assert domain_shift.label_map_for("lester_glue_mrpc_v200", "lester_glue_qqp_v200")[
        "equivalent"] == "duplicate"
    assert domain_shift.label_map_for("lester_squad_v110", "lester_mrqa_race_local") is None
    assert domain_shift.lester_mrqa_targets() == [
        "lester_mrqa_textbookqa_local", "lester_mrqa_bioasq_local", "lester_mrqa_race_local",
        "lester_mrqa_relationextraction_local", "lester_mrqa_duorc_local",
        "lester_mrqa_drop_local"]


def test_generation_predictions_are_mapped(t5_vocab_path):
    qqp_to_mrpc = domain_shift.LABEL_MAPS[("qqp", "mrpc")]
    # QQP-style outputs: duplicate, not_duplicate, "duplicate " (stripped), garbage.
    texts = ["duplicate", "not_duplicate", "duplicate ", "yes"]
    ev = _evaluator(t5_vocab_path, "generation", texts, qqp_to_mrpc)
    out = ev.evaluate({})
    assert [ev.map_text(t) for t in texts] == ["equivalent", "not_equivalent", "equivalent",
                                                "yes"]
    assert out["main_metric"] == 75.0          # 3 of 4 right; "yes" is an illegal label
    assert out["label_map"] == qqp_to_mrpc


def test_rank_classification_scores_the_source_verbalizers(t5_vocab_path):
    qqp_to_mrpc = domain_shift.LABEL_MAPS[("qqp", "mrpc")]
    ev = _evaluator(t5_vocab_path, "rank_classification", ["not_duplicate"] * 4, qqp_to_mrpc)
    out = ev.evaluate({})
    assert ev.seen_options == ["not_duplicate", "duplicate"]
    assert out["main_metric"] == 25.0
    with pytest.raises(ValueError, match="no source label"):
        bad = _evaluator(t5_vocab_path, "rank_classification", ["x"] * 4,
                         {"duplicate": "equivalent"})
        bad.evaluate({})


def test_transfer_table():
    src = {"split": "validation", "mode": "generation", "main_metric": 80.0,
           "metrics": {"f1": 80.0, "exact_match": 70.0}}
    tgt = {"lester_mrqa_race_local": {"split": "validation", "mode": "generation",
                                      "main_metric": 30.5,
                                      "metrics": {"f1": 30.5, "exact_match": 20.0}}}
    text = domain_shift.transfer_markdown("lester_squad_v110", src, tgt)
    assert "| `lester_squad_v110 (in-domain)` | validation | generation | - | 80.00 |" in text
    assert "| `lester_mrqa_race_local` | validation | generation | - | 30.50 | 20.00 | 30.50 |" \
        in text
