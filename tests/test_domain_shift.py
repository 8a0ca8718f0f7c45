"""Domain-shift evaluation (Lester et al. section 5): label-mapped QQP <-> MRPC transfer
(the evaluator's label-map option, its predictions scripted, metrics hand-computed) and the
per-task table."""

import numpy as np
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


def _evaluator(vocab_path, mode, texts, label_map, label_parsing="t5"):
    """The real evaluator with a label map; its model's predictions replaced by `texts`
    (the options it would have scored are recorded)."""
    ev = Evaluator(tiny_prompted_model(), _mrpc_like(vocab_path), FEATURE_LENGTHS,
                   EvalConfig(mode=mode, label_parsing=label_parsing), label_map=label_map,
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
    # QQP-style outputs: duplicate, not_duplicate, "duplicate " (no QQP label for T5's
    # exact parsing; stripped by the lenient option), garbage.
    texts = ["duplicate", "not_duplicate", "duplicate ", "yes"]
    ev = _evaluator(t5_vocab_path, "generation", texts, qqp_to_mrpc)
    out = ev.evaluate({})
    assert [ev.map_text(t) for t in texts] == ["equivalent", "not_equivalent", "duplicate ",
                                                "yes"]
    assert out["main_metric"] == 50.0          # 2 of 4 right; "duplicate ", "yes" illegal
    assert out["label_map"] == qqp_to_mrpc
    ev = _evaluator(t5_vocab_path, "generation", texts, qqp_to_mrpc, "lenient")
    out = ev.evaluate({})
    assert [ev.map_text(t) for t in texts] == ["equivalent", "not_equivalent", "equivalent",
                                                "yes"]
    assert out["main_metric"] == 75.0          # 3 of 4 right; "yes" is an illegal label


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


# ------------------------------------------------------------------ run_transfers, for real
MRPC_DEV = [("It is big.", "It is large.", "1"), ("She won.", "She lost.", "0"),
            ("He ran home.", "He walked home.", "0"), ("A cat sat.", "A cat was sitting.", "1"),
            ("Rain fell.", "It rained.", "1"), ("The sky is blue.", "Grass is green.", "0")]
TEXTBOOKQA_DEV = [("[PAR] Oslo is in Norway.", [("d1", "Where is Oslo?", ["Norway"]),
                                               ("d2", "What is in Norway?", ["Oslo"])]),
                  ("[PAR] Ice melts in heat.", [("d3", "What melts?", ["Ice"])])]


@pytest.fixture
def transfer_data(tmp_path, monkeypatch, t5_vocab_path):
    """Local GLUE files with the MRPC dev split above and an MRQA TextbookQA dev file."""
    from tasks_testdata.glue import write_glue
    from test_tasks_mrqa import _write_mrqa

    glue = write_glue(tmp_path / "glue")
    rows = [("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")] + [
        (label, str(2 * i), str(2 * i + 1), a, b) for i, (a, b, label) in enumerate(MRPC_DEV)]
    (glue / "MRPC" / "dev.tsv").write_text(
        "\ufeff" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    _write_mrqa(tmp_path / "mrqa" / "dev" / "TextbookQA.jsonl", "TextbookQA", TEXTBOOKQA_DEV)
    monkeypatch.setenv("XPROMPT_GLUE_DIR", str(glue))
    monkeypatch.setenv("XPROMPT_MRQA_DIR", str(tmp_path / "mrqa"))
    monkeypatch.setenv("XPROMPT_T5_VOCAB", t5_vocab_path)
    return import_tasks()


def test_run_transfers_scores_a_qqp_prompt_on_mrpc_and_mrqa(transfer_data, fixtures_dir,
                                                            t5_vocab_path):
    """A QQP prompt (source lester_glue_qqp_v200) on MRPC (default label map, rank
    classification of QQP's verbalizers) and on TextbookQA (generation whatever the mode):
    predictions from the plain forward pass, metrics counted by hand."""
    import jax

    from training_utils import fixture_params, reference_greedy, reference_option_scores
    from xprompt_jax.training.frozen_model import init_variables

    tasks = transfer_data
    lengths = {"inputs": 48, "targets": 8}
    model = tiny_prompted_model()
    variables = jax.device_get(init_variables(
        model, fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")),
        lengths, jax.random.PRNGKey(3)))
    source, mrpc, tqa = ("lester_glue_qqp_v200", "lester_glue_mrpc_local",
                         "lester_mrqa_textbookqa_local")
    # the source run's config: its held-out split and main metric must not carry over
    config = EvalConfig(mode="rank_classification", heldout_split="test",
                        main_metric="accuracy")
    out = domain_shift.run_transfers(model, variables, source, [mrpc, tqa], lengths, config)
    assert list(out) == [mrpc, tqa]

    vocab = seqio.SentencePieceVocabulary(t5_vocab_path, extra_ids=100)
    encode = lambda text: vocab.encode(text) + [vocab.eos_id]  # noqa: E731
    # MRPC: inputs as T5's GLUE template writes them; QQP's verbalizers scored
    inputs = [encode(f"sentence1: {a} sentence2: {b}") for a, b, _ in MRPC_DEV]
    assert max(map(len, inputs)) <= lengths["inputs"]
    qqp_labels = ["not_duplicate", "duplicate"]  # QQP's words for MRPC's classes 0, 1
    scores = reference_option_scores(model, variables, inputs, [encode(l) for l in qqp_labels])
    predicted = scores.argmax(axis=1)
    gold = np.asarray([int(label) for _, _, label in MRPC_DEV])
    # (the tiny model prefers the shorter `duplicate` everywhere: accuracy 50, F1 66.67)
    tp = int(np.sum((predicted == 1) & (gold == 1)))
    precision, recall = tp / predicted.sum(), tp / gold.sum()
    f1 = 0.0 if tp == 0 else 100 * 2 * precision * recall / (precision + recall)
    accuracy = 100 * np.mean(predicted == gold)
    result = out[mrpc]
    assert result["mode"] == "rank_classification" and result["split"] == "validation"
    assert result["source_task"] == source and "heldout" not in result
    assert result["label_map"] == domain_shift.LABEL_MAPS[("qqp", "mrpc")]
    assert result["predictions_sample"] == [qqp_labels[p] for p in predicted[:5]]
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result["metrics"]["f1"] == pytest.approx(f1, abs=1e-9)
    assert result["main_metric"] == pytest.approx((accuracy + f1) / 2, abs=1e-9)  # MRPC's

    # TextbookQA: generation although the config says rank classification; no label map
    examples = list(seqio.get_mixture_or_task(tqa).get_dataset(
        None, split="validation", shuffle=False).as_numpy_iterator())
    assert len(examples) == 3
    inputs = [list(ex["inputs"]) for ex in examples]
    assert max(map(len, inputs)) <= lengths["inputs"]
    texts = [vocab.decode(ids) for ids in reference_greedy(model, variables, inputs,
                                                           lengths["targets"], vocab.eos_id)]
    result = out[tqa]
    assert result["mode"] == "generation" and "label_map" not in result
    assert result["source_task"] == source and "heldout" not in result
    assert result["predictions_sample"] == texts
    answers = [[a.decode() for a in ex["answers"]] for ex in examples]
    expected = tasks.metrics.squad(answers, texts)
    assert result["metrics"] == pytest.approx(expected)
