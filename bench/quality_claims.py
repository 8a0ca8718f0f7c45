"""The papers' claims as rows of the quality benchmark, answered from paired differences.

`build_claims(rows)` takes `bench/quality.py`'s `results` rows (per-seed dev / test values)
and returns, for each task, one entry per claim:

`{'claim', 'task', 'regime', 'a', 'b', 'relation', 'metric', 'answer', 'difference',
'ci95', 'n', 'per_seed', 'note'}` - `difference` is the mean over common seeds of A - B
(points of accuracy), `ci95` its 95% t-interval, `answer` yes / no / not separable by
`quality_stats.answer` (a claim of several parts: `quality_stats.combine`, with the parts
in `parts`). A claim whose rows did not run (or ran on fewer than 2 common seeds) is
answered 'not separable' with the reason in `note`; nothing is assumed.

Claims (test accuracy unless said):

1. XPrompt > prompt tuning at equal steps per training stage (Ma et al. Table 1) - against
   the prompt-tuning row, against the pipeline's own stage 1 (same seed and init), and
   against prompt tuning with 2x steps (XPrompt's stage 1 + rewind: equal total steps);
2. reversed < random < XPrompt masks at the counts XPrompt chose (Fig. 5);
3. at 50% and more pruning, importance-ordered masks keep more dev accuracy than random
   ones before retraining (Fig. 2: mean over the curve's ratios >= 0.5 of the stage-1
   prompt's dev accuracy, importance order minus the mean of the random orders);
4. EPT* >= prompt tuning (non-inferior within `MARGIN` points) with fewer parameters;
5. P-Tuning (MLP, LSTM) and ResPrompt > prompt tuning (their papers' claims);
6. our XPrompt variants against the paper's: 'remove' vs gamma * P tokens, global vs
   per-token piece ranking (claim: ours > the paper's choice).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import quality_stats as qs

MARGIN = 1.0  # points of accuracy: the non-inferiority margin of '>=' claims
PT = "prompt tuning"
XP = "XPrompt"


def _values(row: Optional[Mapping[str, Any]], key: str = "test") -> Dict[int, float]:
    if not row or row.get("status") != "ok":
        return {}
    return {int(s): r[key] for s, r in row["per_seed"].items()
            if r.get("status") == "ok" and r.get(key) is not None}


def _curve_gap(row: Optional[Mapping[str, Any]], order: str = "random",
               min_ratio: float = 0.5) -> Dict[int, float]:
    """Per seed: mean over ratios >= min_ratio of importance minus `order` (dev, no
    retraining), from the XPrompt row's masking curve."""
    out: Dict[int, float] = {}
    if not row or row.get("status") != "ok":
        return out
    for s, r in row["per_seed"].items():
        curve = r.get("masking_curve") if r.get("status") == "ok" else None
        if not curve or not curve.get("ratios"):
            continue
        idx = [i for i, x in enumerate(curve["ratios"]) if x >= min_ratio - 1e-9]
        pairs = [(curve["importance"][i], curve[order][i]) for i in idx]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:
            out[int(s)] = sum(a - b for a, b in pairs) / len(pairs)
    return out


def compare(claim: str, task: str, regime: str, a_name: str, b_name: str,
            a: Mapping[int, float], b: Mapping[int, float], relation: str = ">",
            metric: str = "test accuracy", note: str = "") -> Dict[str, Any]:
    """One paired claim 'A `relation` B' over the seeds both rows have."""
    d = qs.paired_difference(a, b)
    reasons = []
    if not a:
        reasons.append(f"{a_name!r} not run")
    if not b:
        reasons.append(f"{b_name!r} not run")
    if a and b and d["n"] < 2:
        reasons.append(f"{d['n']} common seed(s): no interval")
    return {"claim": claim, "task": task, "regime": regime, "a": a_name, "b": b_name,
            "relation": relation, "metric": metric,
            "answer": qs.answer(d["ci95"], relation, MARGIN),
            "difference": d["mean"], "ci95": d["ci95"], "n": d["n"],
            "per_seed": {str(s): v for s, v in d["per_seed"].items()},
            "note": "; ".join([note] * bool(note) + reasons)}


def combined(claim: str, parts: Sequence[Dict[str, Any]], note: str = "") -> Dict[str, Any]:
    """A claim of several comparisons; difference / ci95 are those of the weakest part
    (the smallest lower end)."""
    first = parts[0]
    weakest = min(parts, key=lambda p: (p["ci95"] or [float("-inf")])[0])
    return {"claim": claim, "task": first["task"], "regime": first["regime"],
            "a": " > ".join([parts[0]["a"]] + [p["b"] for p in parts]),
            "b": None, "relation": "chain", "metric": first["metric"],
            "answer": qs.combine([p["answer"] for p in parts]),
            "difference": weakest["difference"], "ci95": weakest["ci95"],
            "n": min(p["n"] for p in parts), "per_seed": weakest["per_seed"],
            "parts": list(parts),
            "note": "; ".join([note] * bool(note) + [p["note"] for p in parts if p["note"]])}


def build_claims(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    claims: List[Dict[str, Any]] = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    for task in tasks:
        by = {r["method"]: r for r in rows if r["task"] == task}
        regime = next(iter(by.values()))["regime"]
        v = lambda name, key="test": _values(by.get(name), key)  # noqa: E731

        def c(claim, a, b, relation=">", note=""):
            return compare(claim, task, regime, a, b, v(a), v(b), relation, note=note)

        claims.append(c("XPrompt > prompt tuning at equal steps per stage", XP, PT,
                        note="XPrompt adds a rewind of as many steps to its stage 1"))
        claims.append(c("XPrompt > its own stage-1 prompt tuning (same seed, same init)",
                        XP, "XPrompt stage 1 (prompt tuning, masked prompt)"))
        claims.append(c("XPrompt > prompt tuning at equal total steps", XP,
                        "prompt tuning, 2x steps",
                        note="stage 1 + rewind = 2x the regime's steps"))
        rev = "XPrompt, reversed masks"
        rnd = "XPrompt, random masks"
        claims.append(combined(
            "reversed < random < XPrompt masks at XPrompt's counts (Fig. 5)",
            [c("XPrompt > random masks", XP, rnd), c("random > reversed masks", rnd, rev)]))
        claims.append(c("XPrompt masks > length masks (a fresh prompt of the surviving "
                        "length, Fig. 5)", XP, "XPrompt, length masks"))
        xp_row = by.get(XP)
        gap = _curve_gap(xp_row, "random")
        zero = {s: 0.0 for s in gap}
        claims.append(compare(
            "at >= 50% pruning, importance-ordered masks keep more accuracy than random "
            "ones before retraining (Fig. 2)", task, regime, "importance order",
            "random order", gap, zero, ">", metric="dev accuracy, stage-1 prompt, mean "
            "over the curve's ratios >= 0.5", note="masking curve of the XPrompt run"
            if gap else "no masking curve in the XPrompt rows"))
        ept = compare("EPT* >= prompt tuning (within %.0f point)" % MARGIN, task, regime,
                      "EPT*", PT, v("EPT*"), v(PT), ">=")
        pt_params = (by.get(PT) or {}).get("trainable_parameters")
        ept_params = (by.get("EPT*") or {}).get("trainable_parameters")
        fewer = (isinstance(pt_params, int) and isinstance(ept_params, int)
                 and ept_params < pt_params)
        part_params = {"claim": "EPT* has fewer trainable parameters", "answer":
                       qs.YES if fewer else (qs.NOT_SEPARABLE if ept_params is None
                                             or pt_params is None else qs.NO),
                       "a": ept_params, "b": pt_params}
        ept["claim"] = "EPT* >= prompt tuning (within %.0f point) with fewer parameters" % MARGIN
        ept["parameters"] = {"EPT*": ept_params, PT: pt_params}
        ept["answer"] = qs.combine([ept["answer"], part_params["answer"]])
        if part_params["answer"] != qs.YES:
            ept["note"] = "; ".join(filter(None, [ept["note"], f"parameters EPT* "
                                                  f"{ept_params} vs {pt_params}"]))
        claims.append(ept)
        for name in ("P-Tuning (MLP)", "P-Tuning (LSTM)", "ResPrompt", "EPT"):
            claims.append(c(f"{name} > prompt tuning", name, PT))
        claims.append(c("ours: 'remove' tokens > the paper's gamma * P ('zero')",
                        "XPrompt, 'remove' tokens (ours)", XP))
        claims.append(c("ours: global piece ranking > the paper's per-token ranking",
                        "XPrompt, global piece ranking (ours)", XP))
    return claims


def _fmt(v) -> str:
    return "-" if v is None else f"{v:+.1f}"


def format_claims(claims: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| task | claim | A - B (mean) | 95% CI | seeds | answer | note |",
             "|---|---|---|---|---|---|---|"]
    for c in claims:
        ci = "-" if not c["ci95"] else f"[{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]"
        lines.append(f"| {c['task']} | {c['claim']} | {_fmt(c['difference'])} | {ci} | "
                     f"{c['n']} | **{c['answer']}** | {c['note']} |")
    return "\n".join(lines)
