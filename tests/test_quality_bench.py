"""bench/quality.py: interval and claim arithmetic against hand-computed values,
and the JSON schema of a tiny real run (a few steps, one seed)."""

import json
import math
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import quality_claims  # noqa: E402
import quality_stats as qs  # noqa: E402


def test_t_interval_matches_closed_form():
    # values 1..5: mean 3, s = sqrt(2.5), t_{0.975,4} = 2.776
    out = qs.summarize([1, 2, 3, 4, 5])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert out["n"] == 5 and out["mean"] == pytest.approx(3.0)
    assert out["std"] == pytest.approx(math.sqrt(2.5))
    assert out["ci95"] == pytest.approx([3 - half, 3 + half])
    assert qs.summarize([7.0]) == {"n": 1, "mean": 7.0, "std": None, "ci95": None}
    assert qs.summarize([None]) ["n"] == 0
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 29):
        assert qs.t_quantile(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-3)


def test_paired_difference_uses_common_seeds_only():
    a = {0: 80.0, 1: 82.0, 2: 90.0, 3: 75.0}
    b = {0: 70.0, 1: 73.0, 2: 79.0}            # seed 3 missing in b
    d = qs.paired_difference(a, b)
    assert d["seeds"] == [0, 1, 2]
    assert d["per_seed"] == {0: 10.0, 1: 9.0, 2: 11.0}
    half = 4.303 * 1.0 / math.sqrt(3)            # s of (10, 9, 11) is 1
    assert d["mean"] == pytest.approx(10.0) and d["ci95"] == pytest.approx([10 - half, 10 + half])


@pytest.mark.parametrize("ci, relation, expected", [
    ([0.5, 3.0], ">", "yes"), ([-3.0, -0.5], ">", "no"), ([-1.0, 2.0], ">", "not separable"),
    (None, ">", "not separable"),
    ([-0.8, 1.0], ">=", "yes"), ([-5.0, -1.5], ">=", "no"), ([-2.0, 0.5], ">=", "not separable"),
])
def test_answers(ci, relation, expected):
    assert qs.answer(ci, relation, margin=1.0) == expected


def test_combine():
    assert qs.combine(["yes", "yes"]) == "yes"
    assert qs.combine(["yes", "no"]) == "no"
    assert qs.combine(["yes", "not separable"]) == "not separable"


def _row(method, tests, params=None, curves=None):
    per_seed = {str(s): {"status": "ok", "test": t, "dev": t, "parameters": params}
                for s, t in enumerate(tests)}
    for s, curve in enumerate(curves or []):
        per_seed[str(s)]["masking_curve"] = curve
    return {"task": "rte", "regime": "r", "method": method, "status": "ok",
            "per_seed": per_seed, "trainable_parameters": params}


def _find(claims, prefix):
    return next(c for c in claims if c["claim"].startswith(prefix))


def test_claims_from_rows():
    curve = lambda imp, rnd: {"ratios": [0.0, 0.5, 0.9], "importance": [90, imp, imp - 10],  # noqa
                              "random": [90, rnd, rnd - 10], "reversed": [90, 50, 50]}
    rows = [_row("prompt tuning", [70, 72, 74], 2560),
            _row("XPrompt", [80, 81, 85], 500, [curve(80, 70), curve(82, 71), curve(79, 70)]),
            _row("XPrompt, random masks", [75, 74, 78]),
            _row("XPrompt, reversed masks", [76, 76, 70]),
            _row("EPT*", [70, 71, 73], 3000)]
    claims = quality_claims.build_claims(rows)
    xp = _find(claims, "XPrompt > prompt tuning at equal steps")
    assert xp["difference"] == pytest.approx((10 + 9 + 11) / 3) and xp["answer"] == "yes"
    assert xp["per_seed"] == {"0": 10.0, "1": 9.0, "2": 11.0}
    fig5 = _find(claims, "reversed < random < XPrompt")
    # XPrompt - random = (5, 7, 7): yes; random - reversed = (-1, -2, 8): not separable
    assert [p["answer"] for p in fig5["parts"]] == ["yes", "not separable"]
    assert fig5["answer"] == "not separable"
    fig2 = _find(claims, "at >= 50% pruning")
    assert fig2["per_seed"] == {"0": 10.0, "1": 11.0, "2": 9.0} and fig2["answer"] == "yes"
    ept = _find(claims, "EPT* >= prompt tuning")
    # differences (0, -1, -1): mean -2/3, within the 1-point margin? the interval is wide,
    # and EPT* has more parameters here: the claim is 'no'
    assert ept["answer"] == "no" and ept["parameters"] == {"EPT*": 3000, "prompt tuning": 2560}
    missing = _find(claims, "ResPrompt > prompt tuning")
    assert missing["answer"] == "not separable" and "not run" in missing["note"]


@pytest.mark.slow
def test_quick_run_schema(tmp_path):
    """A real run: references + prompt tuning + P-Tuning, 1 seed, 4 steps (~60 s).

    In a subprocess: the benchmark registers its world tasks (`world_*_heldout*`), which
    must not leak into this process's task registry (test_repo_docs lists it)."""
    import subprocess

    cmd = [sys.executable, os.path.join(BENCH, "quality.py"), "--quick", "--steps", "4",
           "--jobs", "2", "--output_dir", str(tmp_path), "--methods",
           "task prefix (upper reference)", "no prompt (lower reference)", "prompt tuning",
           "P-Tuning (MLP)"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "quality.json").read_text())
    assert data["seeds"] == [0] and data["tasks"] == ["rte"]
    by = {r["method"]: r for r in data["results"]}
    for name in ("prompt tuning", "P-Tuning (MLP)", "no prompt (lower reference)",
                 "task prefix (upper reference)"):
        row = by[name]
        for key in ("task", "regime", "method", "dev_mean", "test_mean", "test_std",
                    "test_ci95", "per_seed", "trainable_parameters", "wall_time_s_per_run"):
            assert key in row, (name, key)
        assert row["status"] == "ok" and row["test_mean"] is not None, row
        # one seed: the mean is that seed's test accuracy, and no interval
        assert row["test_mean"] == pytest.approx(row["per_seed"]["0"]["test"]), row
        assert row["test_std"] is None and row["test_ci95"] is None, row
    assert by["prompt tuning"]["trainable_parameters"] == 20 * 128
    assert by["prompt tuning"]["per_seed"]["0"]["wall_time_s"] > 0
    # the task name lifts the frozen model far above no prompt on test
    assert by["task prefix (upper reference)"]["test_mean"] > \
        by["no prompt (lower reference)"]["test_mean"] + 30
    assert data["claims"] and all(c["answer"] in ("yes", "no", "not separable")
                                  for c in data["claims"])
    assert all(c["answer"] == "not separable" for c in data["claims"])  # n = 1: no interval
    for key in ("claim", "answer", "difference", "ci95"):
        assert all(key in c for c in data["claims"])
    assert (tmp_path / "quality.png").exists()
    assert data["table"].count("\n") >= 5 and "| prompt tuning |" in proc.stdout


def _fake_quickstart_run(path, tokens, accuracy):
    path.mkdir()
    report = {"prompt_length": 20, "num_pieces": 16,
              "parameters": {"prompt_tuning": 2560, "xprompt": tokens * 64},
              "quickstart": {"task": "world_rte", "seed": 0, "prompt_tuning_accuracy": 99.75,
                             "xprompt_accuracy": accuracy, "chosen": "token 0.9",
                             "references": {"bare": 44.5, "prefixed": 100.0},
                             "surviving_tokens": tokens, "surviving_pieces": tokens * 8,
                             "wall_time_s": 204.0}}
    (path / "report.json").write_text(json.dumps(report))
    return str(path)


def test_quickstart_numbers_block(tmp_path):
    import quickstart_numbers as qn

    a = qn.numbers(_fake_quickstart_run(tmp_path / "a", 2, 100.0), threads=0)
    b = qn.numbers(_fake_quickstart_run(tmp_path / "b", 14, 99.5), threads=1)
    a["stage_seconds"] = {"total": 150.0, "search": 70.0, "stage1": 80.0}  # sorted keys
    text = qn.block([a, b], "2 CPU cores")
    assert text.startswith(qn.BEGIN) and text.endswith(qn.END)
    assert ("stages (150 s): stage 1 (with building the trainer and loading the frozen "
            "model) 80 s, search 70 s; the rest (54 s)") in text
    assert "XPrompt 100.0 after pruning to 2 of 20 tokens and 16 of 320 pieces (128 " in text
    assert "1 XLA thread differed" in text and "14 tokens and 112 pieces (896" in text
    assert "same accuracies" in qn.block([a, a], "x")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{qn.BEGIN}\nold numbers\n{qn.END}\noutro\n")
    qn.write_readme(text, str(readme))
    out = readme.read_text()
    assert out.startswith("intro\n" + qn.BEGIN) and out.endswith(qn.END + "\noutro\n")
    assert "old numbers" not in out and out.count(qn.BEGIN) == 1
