"""Nearest vocabulary pieces of each learned prompt token (Lester et al. section 7).

`nearest_tokens(prompt [n, e], embedding [V, e], k)` -> (ids `[n, k]`, cosines `[n, k]`),
best first. `interpret_prompt(...)` adds the pieces' strings and whether the task's
label strings persist among them (Lester et al.: with class-label init, the labels stay
the nearest neighbours of the tokens they initialised); `markdown_lines(...)` renders
it for report.md.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

# How a label string counts as among a prompt token's neighbours: 'whole' (default) when
# every content piece of the label is among that token's top-k (for a one-piece label: the
# label is a neighbour); 'any_piece' (ours, looser) when one content piece is. Content
# pieces leave out what carries no label text: the bare word-start piece (decodes to
# nothing) and sentinels (the xprompt family's `<extra_id_0> ` prefix).
LABEL_MATCHES = ("whole", "any_piece")
_SENTINEL = re.compile(r"^<extra_id_\d+>$")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_tokens(prompt, embedding, k: int = 5, num_pieces: Optional[int] = None):
    """Top-k rows of `embedding` by cosine similarity to each prompt token.

    Args:
      prompt: `[n, e]` prompt as it enters the encoder.
      embedding: `[V, e]` token embedding (rows past `num_pieces` - padding - ignored).
      k: neighbours per token.
      num_pieces: the vocabulary's size (default: every row).
    Returns:
      (ids `[n, k]` int64, cosines `[n, k]` float64), most similar first (ties: lower id).
    """
    prompt = np.asarray(prompt, np.float64)
    embedding = np.asarray(embedding, np.float64)
    if prompt.ndim != 2 or embedding.ndim != 2 or prompt.shape[1] != embedding.shape[1]:
        raise ValueError(f"nearest_tokens: prompt [n, e] and embedding [V, e] expected, got "
                         f"{prompt.shape} and {embedding.shape}")
    if num_pieces is not None:
        embedding = embedding[:int(num_pieces)]
    k = min(int(k), embedding.shape[0])
    sims = _unit(prompt) @ _unit(embedding).T                      # [n, V]
    ids = np.argsort(-sims, axis=-1, kind="stable")[:, :k]
    return ids.astype(np.int64), np.take_along_axis(sims, ids, axis=-1)


def interpret_prompt(prompt, embedding, vocab, label_strings: Optional[Sequence[str]] = None,
                     k: int = 5, label_match: str = "whole") -> Dict[str, Any]:
    """Nearest pieces per prompt token and which label strings appear among them.

    `vocab` is a seqio vocabulary (`decode`, `encode`, `vocab_size`). A label "appears"
    at a token when its content pieces are among the token's top-k: all of them
    (`label_match='whole'`) or one of them ('any_piece'); see `LABEL_MATCHES`.
    """
    if label_match not in LABEL_MATCHES:
        raise ValueError(f"label_match {label_match!r}; expected one of {LABEL_MATCHES}")
    size = getattr(vocab, "vocab_size", None)
    ids, sims = nearest_tokens(prompt, embedding, k,
                               num_pieces=min(size, np.shape(embedding)[0]) if size else None)

    def piece(i: int) -> str:
        try:
            return vocab.decode([int(i)]) or f"<{int(i)}>"
        except Exception:  # pylint: disable=broad-except  (ids without a surface form)
            return f"<{int(i)}>"

    tokens = [{"token": t, "nearest": [{"id": int(i), "piece": piece(i), "cosine": float(s)}
                                       for i, s in zip(ids[t], sims[t])]}
              for t in range(ids.shape[0])]
    def content(i: int) -> bool:
        """A piece with label text: not the bare word-start piece, not a sentinel."""
        try:
            text = vocab.decode([int(i)]).strip()
        except Exception:  # pylint: disable=broad-except  (ids without a surface form)
            return False
        return bool(text) and not _SENTINEL.match(text)

    labels: List[Dict[str, Any]] = []
    for label in label_strings or []:
        label_ids = set(int(i) for i in vocab.encode(label))
        content_ids = {i for i in label_ids if content(i)}
        if label_match == "whole":
            hit = lambda row: bool(content_ids) and content_ids <= row  # noqa: E731
        else:
            hit = lambda row: bool(content_ids & row)  # noqa: E731
        where = [t for t in range(ids.shape[0]) if hit(set(ids[t].tolist()))]
        labels.append({"label": label, "ids": sorted(label_ids),
                       "content_ids": sorted(content_ids), "tokens": where,
                       "appears": bool(where)})
    return {"k": int(ids.shape[1]), "tokens": tokens, "labels": labels,
            "label_match": label_match,
            "any_label_appears": any(l["appears"] for l in labels)}


def markdown_lines(result: Dict[str, Any], max_tokens: int = 100) -> List[str]:
    """report.md section: one row per prompt token, then the label check."""
    lines = [f"## Nearest vocabulary pieces (top {result['k']} by cosine)", "",
             "| token | nearest pieces (cosine) |", "|---|---|"]
    for row in result["tokens"][:max_tokens]:
        cells = ", ".join(f"`{n['piece']}` ({n['cosine']:.2f})" for n in row["nearest"])
        lines.append(f"| {row['token']} | {cells} |")
    if len(result["tokens"]) > max_tokens:
        lines.append(f"| ... | {len(result['tokens']) - max_tokens} more in report.json |")
    lines.append("")
    if result["labels"]:
        found = [f"`{l['label']}` (tokens {l['tokens']})" for l in result["labels"]
                 if l["appears"]]
        missing = [f"`{l['label']}`" for l in result["labels"] if not l["appears"]]
        how = {"whole": "every content piece of the label among one token's top-k",
               "any_piece": "one content piece of the label among a token's top-k"}
        lines.append(f"Label strings among the nearest pieces ("
                     f"{how[result.get('label_match', 'whole')]}): "
                     + (", ".join(found) if found else "none")
                     + ("; absent: " + ", ".join(missing) if missing else "") + ".")
        lines.append("")
    return lines
