"""Domain-shift evaluation (Lester et al. section 5): label-mapped QQP <-> MRPC transfer
and the per-task table, checked on a stub evaluator with hand-computed metrics."""

import pytest

from _tasks_import import import_tasks
from xprompt_jax import domain_shift


class _Config:
    def __init__(self, mode):
        self.mode, self.split = mode, "validation"


class _StubEvaluator:
    """MRPC-like target: classes (not_equivalent, equivalent); gold = [1, 0, 1, 1]."""

    def __init__(self, mode, texts):
        self.config = _Config(mode)
        self.texts = texts
        self.label_strings_fn = lambda ex: ["not_equivalent", "equivalent"]
        self.seen_options = None

    def _predict_generation(self, variables):
        return list(self.texts)

    def _predict_rank(self, variables):
        self.seen_options = self.label_strings_fn({})
        return list(self.texts)

    def result_from_texts(self, texts):
        gold = [1, 0, 1, 1]
        ids = [{"not_equivalent": 0, "equivalent": 1}.get(t, -1) for t in texts]
        acc = 100.0 * sum(int(a == b) for a, b in zip(ids, gold)) / len(gold)
        return {"mode": self.config.mode, "split": "validation",
                "metrics": {"accuracy": acc}, "main_metric": acc, "texts": list(texts)}


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


def test_generation_predictions_are_mapped():
    qqp_to_mrpc = domain_shift.LABEL_MAPS[("qqp", "mrpc")]
    # QQP-style outputs: duplicate, not_duplicate, "duplicate " (stripped), garbage.
    ev = _StubEvaluator("generation", ["duplicate", "not_duplicate", "duplicate ", "yes"])
    out = domain_shift.LabelMapped(ev, qqp_to_mrpc).evaluate({})
    assert out["texts"] == ["equivalent", "not_equivalent", "equivalent", "yes"]
    assert out["main_metric"] == 75.0          # 3 of 4 right; "yes" is an illegal label
    assert out["label_map"] == qqp_to_mrpc


def test_rank_classification_scores_the_source_verbalizers():
    qqp_to_mrpc = domain_shift.LABEL_MAPS[("qqp", "mrpc")]
    ev = _StubEvaluator("rank_classification", ["not_duplicate"] * 4)
    out = domain_shift.LabelMapped(ev, qqp_to_mrpc).evaluate({})
    assert ev.seen_options == ["not_duplicate", "duplicate"]
    assert out["main_metric"] == 25.0
    with pytest.raises(ValueError, match="no source label"):
        bad = _StubEvaluator("rank_classification", ["x"] * 4)
        domain_shift.LabelMapped(bad, {"duplicate": "equivalent"}).evaluate({})


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
